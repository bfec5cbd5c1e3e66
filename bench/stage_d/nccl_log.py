"""Read NCCL's own log (``NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,TUNING``): which kernel each collective got.

Why the log: it is NCCL's own statement of its choice, per collective, with no
profiler in the process. The lines and where NCCL prints them (NVIDIA/nccl):

- symmetric kernel: ``INFO(NCCL_TUNING, "%s [Symmetric]: %ld Bytes -> Kernel %s nchannels %d nthreads %d nWorks %d")``
  at v2.28.9-1 ``src/scheduler/symmetric_sched.cc:229``, v2.29.7-1 ``:288``, v2.30.7-1 ``:356``; v2.27.7-1
  ``src/enqueue.cc:1429`` prints the same without ``nWorks``;
- any other kernel: ``INFO(NCCL_TUNING, "%s: %ld Bytes -> Algo %s proto %s channel{Lo..Hi}={%d..%d}")`` at
  v2.28.9-1 ``src/enqueue.cc:741``, v2.30.7-1 ``src/enqueue.cc:822``.

Both are printed only by the communicator's rank 0 (``if (comm->rank == 0)`` just above each) and, like
every INFO line, behind the prefix ``host:pid:tid [cudaDev] NCCL INFO `` (v2.30.7-1 ``src/debug.cc:330``
and ``:354``), optionally after a timestamp (``NCCL_DEBUG_TIMESTAMP_FORMAT``). The file named by
``NCCL_DEBUG_FILE`` is line-buffered (``setlinebuf``, v2.28.9-1/v2.30.7-1 ``src/debug.cc``), so once the
collective's host call returned, its line is in the file: a caller can slice the file by byte offsets
taken around a phase of its own (``LogCursor``).

Also read: the version line (``"NCCL version " ... "+cuda" ...``, ``VERSION_STRING`` in ``src/init.cc``),
``Init COMPLETE`` lines (rank and size of each communicator) and the refusal of two ranks on one GPU
(v2.28.9-1 ``src/init.cc:904`` "Duplicate GPU detected"; v2.30.7-1 ``src/init.cc:1057`` "Multiple Ranks are
using the same GPU/Partition", which ``NCCL_MULTI_RANK_GPU_ENABLE=1`` lifts from 2.30.3).
"""

from __future__ import annotations

import glob
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

# [timestamp] host:pid:tid [dev] NCCL INFO ...; a WARN puts "file:line " (v2.28.9-1 debug.cc:360) or
# "file:line (function) " (v2.30.7-1 debug.cc:345) before "NCCL WARN". The timestamp is whatever strftime made of
# NCCL_DEBUG_TIMESTAMP_FORMAT: "[%F %T] " by default, but any text, brackets or not (v2.30.7-1 debug.cc:189-190
# turns '_' into ' ', so "%F_%T_" prints "2026-12-01 10:00:00 "): the prefix is searched for, not anchored.
_PREFIX = (r"(?P<host>[^\s:\[\]]+):(?P<pid>\d+):(?P<tid>\d+)\s+\[(?P<dev>\d+)\]\s+"
           r"(?:\S+:\d+\s+(?:\([^)]*\)\s+)?)?NCCL\s+(?P<level>INFO|WARN)\s+")
PREFIX = re.compile(_PREFIX)
SYMMETRIC = re.compile(r"(?P<func>\w+) \[Symmetric\]: (?P<bytes>\d+) Bytes -> Kernel (?P<kernel>\S+) "
                       r"nchannels (?P<nchannels>\d+) nthreads (?P<nthreads>\d+)(?: nWorks (?P<nworks>\d+))?")
LEGACY = re.compile(r"(?P<func>\w+): (?P<bytes>\d+) Bytes -> Algo (?P<algo>\S+) proto (?P<proto>\S+) "
                    r"channel\{Lo\.\.Hi\}=\{(?P<lo>\d+)\.\.(?P<hi>\d+)\}")
VERSION = re.compile(r"NCCL version (?P<version>\d+\.\d+\.\d+)(?P<suffix>\S*)")
INIT_COMPLETE = re.compile(r"comm (?P<comm>0x[0-9a-f]+|\(nil\)) rank (?P<rank>\d+) nranks (?P<nranks>\d+) .*Init COMPLETE")
SAME_GPU = ("Duplicate GPU detected", "Multiple Ranks are using the same GPU")


@dataclass(frozen=True)
class Choice:
    """One collective as NCCL's rank 0 logged it."""

    func: str
    nbytes: int
    symmetric: bool
    kernel: str  # the symmetric kernel's name, or "ALGO/PROTO"
    pid: Optional[int]


@dataclass
class LogSummary:
    choices: List[Choice] = field(default_factory=list)
    versions: List[str] = field(default_factory=list)
    communicators: List[dict] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def of(self, func: str = "AllGather") -> List[Choice]:
        return [c for c in self.choices if c.func == func]

    def share(self, func: str = "AllGather") -> Optional[float]:
        """Share of ``func`` collectives that ran a symmetric kernel; None when the slice holds none."""
        chosen = self.of(func)
        return None if not chosen else sum(c.symmetric for c in chosen) / len(chosen)

    def kernels(self, func: str = "AllGather") -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for c in self.of(func):
            counts[c.kernel] = counts.get(c.kernel, 0) + 1
        return counts

    def refused_same_gpu(self) -> bool:
        return any(marker in w for w in self.warnings for marker in SAME_GPU)

    def describe(self, func: str = "AllGather") -> dict:
        return {"count": len(self.of(func)), "symmetric": sum(c.symmetric for c in self.of(func)),
                "share": self.share(func), "kernels": self.kernels(func), "versions": sorted(set(self.versions)),
                "warnings": self.warnings[:5], "same_gpu_refused": self.refused_same_gpu()}


def parse_line(line: str) -> Optional[tuple]:
    """('choice', Choice) | ('version', str) | ('comm', dict) | ('warn', str) | None for any other line."""
    head = PREFIX.search(line)
    body = line[head.end():].rstrip("\n") if head else line.rstrip("\n")
    pid = int(head.group("pid")) if head else None
    if head and head.group("level") == "WARN":
        return "warn", body
    match = SYMMETRIC.search(body)
    if match:
        return "choice", Choice(match.group("func"), int(match.group("bytes")), True, match.group("kernel"), pid)
    match = LEGACY.search(body)
    if match:
        return "choice", Choice(match.group("func"), int(match.group("bytes")), False,
                                f"{match.group('algo')}/{match.group('proto')}", pid)
    match = VERSION.search(body)
    if match:
        return "version", match.group("version")
    match = INIT_COMPLETE.search(body)
    if match:
        return "comm", {"comm": match.group("comm"), "rank": int(match.group("rank")),
                        "nranks": int(match.group("nranks")), "pid": pid}
    return None


def parse(lines: Iterable[str]) -> LogSummary:
    summary = LogSummary()
    for line in lines:
        parsed = parse_line(line)
        if parsed is None:
            continue
        kind, value = parsed
        if kind == "choice":
            summary.choices.append(value)
        elif kind == "version":
            summary.versions.append(value)
        elif kind == "comm":
            summary.communicators.append(value)
        else:
            summary.warnings.append(value[:200])
    return summary


def parse_text(text: str) -> LogSummary:
    return parse(text.splitlines())


def log_file_of_this_process(environ=None) -> Optional[str]:
    """The file NCCL writes this process's log to (``NCCL_DEBUG_FILE`` with ``%h`` and ``%p`` expanded,
    v2.30.7-1 ``src/debug.cc:201-237``), or None when NCCL logs to stdout."""
    env = os.environ if environ is None else environ
    pattern = env.get("NCCL_DEBUG_FILE")
    if not pattern:
        return None
    host = socket.gethostname().split(".")[0]  # NCCL's getHostName cuts at the first '.'
    path = pattern.replace("%%", "\0").replace("%h", host).replace("%p", str(os.getpid())).replace("\0", "%")
    if os.path.exists(path):
        return path
    candidates = glob.glob(os.path.join(os.path.dirname(path) or ".", f"*{os.getpid()}*"))
    return candidates[0] if len(candidates) == 1 else path


class LogCursor:
    """Byte offsets into this process's NCCL log, so a phase reads only its own lines."""

    def __init__(self, path: Optional[str]):
        self.path = path

    def offset(self) -> int:
        try:
            return os.path.getsize(self.path) if self.path else 0
        except OSError:
            return 0

    def read(self, start: int, end: Optional[int] = None) -> LogSummary:
        if not self.path or not os.path.exists(self.path):
            return LogSummary()
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(None if end is None else max(0, end - start))
        return parse_text(data.decode("utf-8", "replace"))
