"""The rehearsal in shapes only tests use, outside the wheel.

``run``: one spawn, one CP size and a list of cases: what a patched *source tree* does.

``tests/tools/test_patches_and_sweep.py`` applies a ``patches/`` diff to a copy of a release's sglang,
runs it with the plugin off, and reads each case's allocations: the diff must give what the runtime
patch gives. Only that test uses this shape of the result, so it lives here, outside the wheel; the
proof itself (``sglang_cp_symm.tools.rehearsal.prove``) stays in the package, as ``demo`` runs it.
Import it with the checkout at the end of ``sys.path``, so the installed package is the one rehearsed.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict
from typing import Dict, Optional

from sglang_cp_symm.tools.rehearsal import CallRecord, Config, cpu_gather_group, prove


def run(cp_size: int = 2, cases: int = 20, seed: int = 1234, patch: bool = True, send: bool = False,
        nccl: Optional[str] = None, timeout: float = 300) -> Dict[int, dict]:
    """``cp_size`` processes, each target's calls (up to ``cases``), unpatched vs patched (``send``, ``nccl``).

    Each rank's report: {"status", "results": [{case, function, lengths, total, dtype, unpatched, patched,
    bit_identical}]} with, per side, equal_expected / gathers / inside / outside / output_in_context /
    input_in_context. Calls zigzag makes on plain CPU tensors and the empty batch are left out (no context,
    or no gather, by design).
    """
    configs = [Config("off", "plugin off")]
    if patch:
        configs.append(Config("on", "plugin on", enabled=True, send=send, nccl=nccl))
    rounds = max(1, cases // 8)
    result = prove(world=cp_size, sizes=(cp_size,), configs=configs, seed=seed, rounds=rounds, timeout=timeout)
    if "error" in result:
        return {0: {"error": result["error"]}}
    out: Dict[int, dict] = {}
    for rank, rep in result["ranks"].items():
        rows = []
        for index, entry in enumerate(rep["calls"].values()):
            if entry["plain_cpu"] or entry["expected_gathers"] == 0 or len(rows) >= cases:
                continue
            sides = {}
            for label, config in (("unpatched", "off"), ("patched", "on" if patch else "off")):
                run_ = entry["runs"][config]
                if "error" in run_:
                    return {0: {"error": run_["error"]}}
                sides[label] = {"equal_expected": run_["correct"], "gathers": run_["gathers"],
                                "inside": [(i["op"], i["bytes"], i["group"], i["is_output"], i["is_input"])
                                           for i in run_["inside"]],
                                "outside": run_["outside"], "output_in_context": run_["output_in_context"],
                                "input_in_context": run_["input_in_context"],
                                "same_as_off": run_["same_as_off"]}
            rows.append({"case": index, "function": f"{entry['target']} {entry['branch']}",
                         "lengths": entry["lengths"], "total": sum(entry["lengths"]), "dtype": entry["dtype"],
                         "bit_identical": sides["patched"]["same_as_off"] is not False, **sides})
        out[int(rank)] = {"status": rep["status"].get("on" if patch else "off"), "results": rows}
    return out


#: The decode-CP all-gather the proof runs under the race guard (``layers/dcp/comm.py``, 0.5.15+): it opens the
#: DCP group's context for its send buffer and ``GroupCoordinator.all_gather`` opens it for the output.
DCP_MODULE, DCP_GATHER = "sglang.srt.layers.dcp.comm", "all_gather_q_for_mla_decode"


def dcp_gather(ps, world: int, rank: int, name: str):
    """(the release's DCP q all-gather, a gloo DCP group of 2 ranks built under ``name``), or None where the
    release has no such gather. ``name`` is the one the release's own parallel_state builds its DCP group with
    (the caller reads it from the source), so the guard meets the name a server would give it."""
    if importlib.util.find_spec(DCP_MODULE) is None:
        return None
    gather = getattr(importlib.import_module(DCP_MODULE), DCP_GATHER, None)
    if gather is None:
        return None
    return gather, cpu_gather_group(ps, world, rank, [list(range(s, s + 2)) for s in range(0, world, 2)], name)


def run_dcp(dcp, rank: int, recorder) -> dict:
    """One DCP q all-gather on this rank: its result against the true gather, and every allocation with the
    context open at the time (the guard must leave none of them in a DCP context)."""
    import torch
    from sglang.srt.distributed import parallel_state as ps

    gather, group = dcp
    if hasattr(ps, "_DCP"):  # 0.5.15-0.5.20: get_parallel().dcp_group reads it through
        ps._DCP = group
    parallel = importlib.import_module("sglang.srt.runtime_context").get_parallel()
    if hasattr(parallel, "override_permanently"):  # 0.5.21+: stamped values only
        parallel.override_permanently(dcp_group=group)

    def q(r: int):  # [tokens, heads, dim]: each rank holds its own heads' queries
        return (torch.arange(60, dtype=torch.float32).view(3, 4, 5) + 1000 * r,
                torch.arange(24, dtype=torch.float32).view(3, 4, 2) - 1000 * r)

    mine, record = q(rank), CallRecord()
    with recorder.allocations(record):
        q_nope, q_pe = gather(*mine)
    first = rank - group.rank_in_group
    peers = [q(first + i) for i in range(group.world_size)]
    correct = (torch.equal(q_nope, torch.cat([p[0] for p in peers], dim=1))
               and torch.equal(q_pe, torch.cat([p[1] for p in peers], dim=1)))
    return {"group": group.unique_name, "correct": bool(correct),
            "allocations": [asdict(a) for a in record.allocations]}


def dcp_case(name: Optional[str]):
    """``prove(extra=dcp_case(name))``: each rank also runs the release's DCP q all-gather once per configuration,
    on a DCP group of 2 ranks named as the release names its own (``name``; None or an odd world: nothing)."""
    def per_rank(ps, world: int, rank: int):
        dcp = dcp_gather(ps, world, rank, name) if name and world % 2 == 0 else None
        return None if dcp is None else (lambda rank_, recorder: run_dcp(dcp, rank_, recorder))

    return per_rank
