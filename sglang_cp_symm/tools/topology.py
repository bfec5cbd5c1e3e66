"""Whether the attention-CP groups a server will build can use NCCL's symmetric kernels at all, from its arguments
and this machine's GPU topology (``sglang-cp-symm doctor --nnodes N --tp T --attn-cp-size C [--dp D]``).

NCCL runs symmetric kernels only when every rank of the communicator sits in one NVLink domain (the notes'
§3: "only on a single node with all-direct NVLink; the fallback is silent"). Where a CP group spans nodes, or
two of its GPUs have no NVLink between them, NCCL silently falls back to its regular kernels, and the symmetric
pool the CP buffers are put in costs memory for nothing. The doctor says so before a deployment.

Which global ranks form a CP group is sglang's own rule (``initialize_model_parallel``, the same in 0.5.12
``parallel_state.py:1873-1896``, 0.5.18 ``:2511-2534`` and 0.5.23 ``:2760-2784``): with
``attn_tp = tp // attn_cp // attn_dp``, the group of (TP group g, DP index d, attention-TP index i) is
``range(g*tp + d*attn_tp*attn_cp + i, g*tp + (d+1)*attn_tp*attn_cp + i, attn_tp)``, and where
``attn_cp == tp`` the CP group is the TP group itself. Ranks fill nodes in order (``world // nnodes`` per node,
sglang's ``--node-rank`` layout), and a rank's GPU on its node is its local rank (``--base-gpu-id 0``,
``--gpu-id-step 1``, sglang's defaults).

The GPU links are read from ``nvidia-smi topo -m`` where it runs (``NV#``: a bonded set of # NVLinks; ``SYS``,
``NODE``, ``PHB``, ``PXB``, ``PIX``: PCIe paths, per nvidia-smi's legend). What cannot be read is said, never guessed.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

#: One bounded call: nvidia-smi answers in well under a second where a driver is loaded.
TOPO_TIMEOUT_S = 10


class TopologyError(ValueError):
    """Server arguments that sglang itself would refuse (the message says which and what to give)."""


@dataclass(frozen=True)
class Verdict:
    state: str  # "ok", "spans nodes", "no all-NVLink path", "unknown", "no CP"
    message: str
    groups: Tuple[Tuple[int, ...], ...] = ()


def cp_groups(tp: int, attn_cp: int, attn_dp: int = 1, pp: int = 1) -> List[List[int]]:
    """The global ranks of every attention-CP group, by sglang's rule (module docstring)."""
    for name, value in (("--tp", tp), ("--attn-cp-size", attn_cp), ("--dp (with DP attention)", attn_dp),
                        ("--pp", pp)):
        if not isinstance(value, int) or value < 1:
            raise TopologyError(f"{name} must be a positive whole number")
    if tp % (attn_cp * attn_dp):
        raise TopologyError(f"--tp {tp} is not a multiple of --attn-cp-size {attn_cp} x the attention DP size "
                            f"{attn_dp}: sglang refuses that layout")
    if attn_cp == tp:
        return [list(range(g * tp, (g + 1) * tp)) for g in range(pp)]
    attn_tp = tp // attn_cp // attn_dp
    groups = []
    for g in range(pp):
        for d in range(attn_dp):
            for i in range(attn_tp):
                start = g * tp + d * attn_tp * attn_cp + i
                groups.append(list(range(start, start + attn_tp * attn_cp, attn_tp)))
    return groups


def parse_topo(text: str) -> Optional[Dict[Tuple[int, int], str]]:
    """``nvidia-smi topo -m``'s GPU-to-GPU matrix as {(i, j): link}; None where the text holds no such matrix."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line for line in lines if line.split() and line.split()[0].startswith("GPU")), None)
    if header is None:
        return None
    columns = [c for c in header.split() if c.startswith("GPU") and c[3:].isdigit()]
    links: Dict[Tuple[int, int], str] = {}
    for line in lines:
        cells = line.split()
        if not cells or not cells[0].startswith("GPU") or not cells[0][3:].isdigit() or line == header:
            continue
        row = int(cells[0][3:])
        for column, cell in zip(columns, cells[1:1 + len(columns)]):
            links[(row, int(column[3:]))] = cell
    return links or None


def read_topology() -> Tuple[Optional[Dict[Tuple[int, int], str]], str]:
    """(links, where from) of this machine, or (None, why not)."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None, "nvidia-smi is not on this machine's PATH"
    try:
        done = subprocess.run([tool, "topo", "-m"], capture_output=True, text=True, timeout=TOPO_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"nvidia-smi topo -m failed ({type(exc).__name__})"
    links = parse_topo(done.stdout) if done.returncode == 0 else None
    if links is None:
        return None, f"nvidia-smi topo -m gave no GPU matrix (exit {done.returncode})"
    return links, "nvidia-smi topo -m"


def judge(groups: Sequence[Sequence[int]], nnodes: int, links: Optional[Dict[Tuple[int, int], str]],
          links_from: str = "") -> Verdict:
    """Whether every CP group can run symmetric kernels: on one node, and every pair of its GPUs joined by NVLink."""
    if not isinstance(nnodes, int) or nnodes < 1:
        raise TopologyError("--nnodes must be a positive whole number")
    frozen = tuple(tuple(g) for g in groups)
    if not frozen or all(len(g) < 2 for g in frozen):
        return Verdict("no CP", "attention context parallelism is off (--attn-cp-size 1): no CP group", frozen)
    world = max(max(g) for g in frozen) + 1
    if world % nnodes:
        raise TopologyError(f"{world} ranks do not divide over --nnodes {nnodes}")
    per_node = world // nnodes
    for group in frozen:
        nodes = sorted({rank // per_node for rank in group})
        if len(nodes) > 1:
            return Verdict("spans nodes", f"the CP group of ranks {list(group)} spans nodes {nodes} ({per_node} ranks "
                           "per node): NCCL's symmetric kernels need every rank in one NVLink domain, so they will not "
                           "engage for it (unless these nodes share one multi-node NVLink domain, such as a GB200 "
                           "NVL72 rack, which the doctor cannot see from here), and its symmetric pool costs memory "
                           "for nothing", frozen)
    if links is None:
        return Verdict("unknown", f"each CP group is on one node; whether its GPUs are joined by NVLink could not be "
                       f"read ({links_from or 'no topology given'})", frozen)
    for group in frozen:
        local = [rank % per_node for rank in group]
        for a in local:
            for b in local:
                link = links.get((a, b), "?")
                if a != b and not link.startswith("NV"):
                    return Verdict("no all-NVLink path", f"GPU{a} and GPU{b} of the CP group of ranks {list(group)} are "
                                   f"joined by {link}, not NVLink ({links_from}): NCCL's symmetric kernels will not "
                                   "engage for it, and its symmetric pool costs memory for nothing", frozen)
    return Verdict("ok", f"every CP group ({len(frozen)} of {len(frozen[0])} ranks) is on one node with NVLink between "
                   f"all its GPUs ({links_from})", frozen)
