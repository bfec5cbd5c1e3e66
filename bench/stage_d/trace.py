"""Count NCCL's kernels in a PyTorch profiler trace: symmetric (``ncclSymk*``) or not, and how long each ran.

The profiler names each GPU kernel as the CUDA runtime saw it. NCCL's symmetric kernels are
``ncclSymkDevKernel_<Coll>_<Algo>`` from 2.28 (v2.30.7-1 ``src/device/symmetric/generate.py:156-158``) and
``ncclSymDevKernel_<Coll>_<Algo>`` in 2.27 (v2.27.7-1 ``generate.py:136-138``); every other NCCL kernel is
``ncclDevKernel_*`` (``src/device/generate.py``), ``ncclDevKernel_Generic*`` included. A trace taken around
calls that run no other NCCL collective therefore gives the share of those calls that ran a symmetric
kernel, and the kernel time alone (the figure comparable with nccl-tests and the references).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

SYMMETRIC_PREFIXES = ("ncclSymkDevKernel", "ncclSymDevKernel")
NCCL_PREFIX = "nccl"


def kernel_family(name: str) -> Optional[str]:
    """'symmetric', 'nccl' (any other NCCL kernel) or None (not NCCL)."""
    bare = name.strip()
    if any(bare.startswith(p) for p in SYMMETRIC_PREFIXES):
        return "symmetric"
    if bare.startswith(NCCL_PREFIX):
        return "nccl"
    return None


@dataclass
class KernelCount:
    symmetric: int = 0
    other_nccl: int = 0
    names: Dict[str, int] = field(default_factory=dict)
    durations_us: List[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.symmetric + self.other_nccl

    def share(self) -> Optional[float]:
        return None if not self.total else self.symmetric / self.total

    def median_us(self) -> Optional[float]:
        return statistics.median(self.durations_us) if self.durations_us else None

    def describe(self) -> dict:
        return {"symmetric": self.symmetric, "other_nccl": self.other_nccl, "share": self.share(),
                "kernel_median_us": self.median_us(), "names": dict(sorted(self.names.items()))}


def count_events(events: Iterable[dict]) -> KernelCount:
    """Count the GPU kernel events (``"cat": "kernel"``) of a Chrome trace's ``traceEvents``."""
    count = KernelCount()
    for event in events:
        if str(event.get("cat", "")).lower() != "kernel":
            continue
        name = str(event.get("name", ""))
        family = kernel_family(name)
        if family is None:
            continue
        short = name.split("(")[0]
        count.names[short] = count.names.get(short, 0) + 1
        if family == "symmetric":
            count.symmetric += 1
        else:
            count.other_nccl += 1
        if isinstance(event.get("dur"), (int, float)):
            count.durations_us.append(float(event["dur"]))
    return count


def count_trace_file(path: str) -> KernelCount:
    with open(path) as f:
        data = json.load(f)
    events = data.get("traceEvents", []) if isinstance(data, dict) else data
    return count_events(events)
