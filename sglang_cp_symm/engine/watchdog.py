"""Count every growth of the symmetric pools, per rank, and say where it came from.

Why: a pool growth is an ``ncclMemAlloc`` plus a collective, blocking
``ncclCommWindowRegister`` (up to 0.5.11 inside the allocation, from 0.5.12 at the
context's exit). It costs milliseconds, and if one rank grows while another does
not, every rank of the communicator waits forever. After the warm-up there should
be none; one that happens anyway is what an operator needs to see.

How, so that it costs almost nothing where nothing grows:
- The signal is a counter in the allocator itself (``alloc_counter``): a growth of
  any symmetric pool is one call of the allocator sglang compiles, which counts it in
  memory the watchdog reads from a fixed address (no call into the driver, no Python
  frame). The counter proves itself against the pools' snapshots on the first reading
  and at every growth; where it cannot be had (the pool compiled before the plugin
  loaded, an allocator source of another shape, a library not found) or disagrees, the
  watchdog says so in one line and reads the device memory in use instead
  (``cudaMemGetInfo``, about 6 us a reading on an H100, issue 23).
- The register's modules open their contexts through the openers of ``context_hooks``,
  which recognise a context opened by one of the register's CP all-gathers (by its
  module, or by the code object of the function that opened it) and hand it out in a
  wrapper whose entry reads the signal and whose exit reads it again; only if it moved are the pools' snapshots taken to measure the growth, and the
  growth is logged with that gather's file and line, before the original ``__exit__``
  runs (from 0.5.12 it registers new segments collectively, where a hang would start).
  sglang's class itself is left alone: any other context (the TP all-reduces, a few per
  layer) runs as sglang's own, with nothing added.
- Growth anywhere else is caught between requests: each request's arrival at the
  scheduler reads the signal once, and a change is measured the same way and
  reported as outside the CP all-gathers.
- A monitor thread reports a thread that stays inside a CP all-gather's symmetric
  context for longer than ``HANG_REPORT_AFTER_S``: a rank waiting for its peers in a
  registration, the hang itself, named with the place it waits.
The costs, per context kind, are what ``bench/warmup_latency.py --paired-only`` prints
(docs/watchdog-cost.md). Contexts opened during CUDA-graph capture are not measured
(their allocations go to the graph's pool), and a graph's replay opens none.

Phases: ``start`` (pre-allocation, CUDA-graph capture), ``warm-up`` (from the first
warm-up request's arrival on this rank to its completion marker), ``serving``
(afterwards, or from the first other request when no warm-up ran). Growths in
``serving`` are the ones that matter; each is logged at WARNING and, where
sglang's metrics are on, counted in ``sglang_cp_symm_pool_growths_total``.

The Prometheus counter: sglang runs prometheus_client in multiprocess mode and sets
``PROMETHEUS_MULTIPROC_DIR`` before it starts its children (``set_prometheus_multiproc_dir``
in ``utils/common.py``; importing prometheus_client earlier breaks that mode). So the
counter is created only in a process that already has the variable, that is a
scheduler sglang spawned with ``--enable-metrics``; it then appears on the server's
``/metrics`` as ``sglang_cp_symm_pool_growths_total{phase="start"|"warm-up"|"serving"}``
(``PoolWatchdog.count_in_metrics``).

Each rank also writes its record (``write_rank_record``) to a folder per server
launch; ``compare_ranks`` reads them all and names uneven segment counts, the
precursor of the registration hang, since no single rank can see it alone.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from threading import get_ident
from time import monotonic
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

from . import alloc_counter, context_hooks
from .logs import logger
from .settings import read_settings


START, WARMUP, SERVING = "start", "warm-up", "serving"
OUTSIDE_AT_GATHER = "outside the CP all-gathers (seen when the next CP all-gather began)"
OUTSIDE_AT_REQUEST = "outside the CP all-gathers (seen when the next request arrived)"
HANG_REPORT_AFTER_S = 60.0
_MONITOR_PERIOD_S = 5.0
_KEEP_EVENTS = 50
_SKIP_FILES = ("sglang_cp_symm", "wrapt", "contextlib.py", "pynccl_allocator.py")


@dataclass
class Growth:
    phase: str
    grown_bytes: int
    segments_before: int
    segments_after: int
    site: str
    at: float
    allocations: int = 0  # the allocator's calls the counter saw (0: measured by the device memory in use)

    def line(self, rank: str) -> str:
        return (f"sglang-cp-symm: {rank}: symmetric pool grew by {self.grown_bytes / 2**20:.1f} MiB "
                f"(segments {self.segments_before} -> {self.segments_after}) during {self.phase}, at {self.site}")


@dataclass
class WarmupRecord:
    prompts: List[int] = field(default_factory=list)
    seconds: float = 0.0
    before: Dict[str, Dict[str, int]] = field(default_factory=dict)
    after: Dict[str, Dict[str, int]] = field(default_factory=dict)
    growths: int = 0


def call_site(frame) -> str:
    """The first frame outside the context machinery: the ``with`` statement that opened the context."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if not any(part in filename for part in _SKIP_FILES):
            return f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return "unknown"


def thread_site(ident: int) -> str:
    """Where another thread is now, without keeping its frames alive.

    ``sys._current_frames()`` returns a dict that holds the calling frame, whose
    locals hold the dict: a reference cycle. Kept until the cyclic collector runs,
    it would keep alive every tensor the other threads' frames held at that moment,
    pool blocks included, and the pool would grow for nothing (seen on an H100 with
    a 5 s monitor: 3 to 7 needless segments over a 32K-token sweep). So the site is
    read at once and the dict dropped before returning.
    """
    frames = sys._current_frames()
    try:
        return call_site(frames.get(ident))
    finally:
        del frames


def device_used_bytes() -> int:
    """Bytes in use on the current device, by every allocator (``cudaMemGetInfo``).

    A new pool segment (``ncclMemAlloc``, ``cuMemCreate`` underneath) raises it; so
    does anything else allocated meanwhile, which the pools' snapshots then tell
    apart. Called outside CUDA-graph capture only.
    """
    import torch

    if not torch.cuda.is_initialized():
        return 0
    free, total = torch.cuda.mem_get_info()
    return int(total - free)


def sglang_pools(group_pools: Optional[Dict[int, Any]] = None) -> Dict[str, Any]:
    """The symmetric pools of this process: sglang's shared pool and the plugin's per-group pools
    (``group_pools``: the plugin object's, by ``id(group)``, as ``pool.GroupPoolRouter`` fills them)."""
    pools: Dict[str, Any] = {}
    allocator = sys.modules.get("sglang.srt.distributed.device_communicators.pynccl_allocator")
    shared = getattr(allocator, "_mem_pool", None)
    if shared is not None:
        pools["shared"] = shared
    for i, (_, pool) in enumerate(sorted((group_pools or {}).items())):
        pools[f"cp{i}" if i else "cp"] = pool
    return pools


def pool_segments_and_bytes(pool: Any) -> Dict[str, int]:
    from .pool import pool_stats

    stats = pool_stats(pool)
    return {"segments": stats["segments"], "bytes": stats["reserved_bytes"]}


#: The Prometheus counter of pool growths, by phase (``PoolWatchdog.count_in_metrics``).
METRIC = "sglang_cp_symm_pool_growths"


class PoolWatchdog:
    """Per-process record of pool growths. The three probes are parameters: CPU tests pass their own.

    ``table`` is the plugin object's ``context_hooks.ContextTable`` (the roles it gives the CP all-gathers'
    contexts go there); a watchdog made alone gets a table of its own."""

    def __init__(self, reserved: Callable[[], int] = device_used_bytes,
                 pools: Callable[[], Dict[str, Any]] = sglang_pools,
                 stats: Callable[[Any], Dict[str, int]] = pool_segments_and_bytes,
                 table: Optional[context_hooks.ContextTable] = None) -> None:
        self._reserved, self._pools, self._stats = reserved, pools, stats  # _reserved: the signal's reading
        self.table = context_hooks.ContextTable() if table is None else table
        self.report_dir: Optional[str] = None  # the applied settings' folder for the rank records, while applied
        # The growth callback that counts in Prometheus, made once and kept across stop_metrics/count_in_metrics:
        # prometheus_client refuses a second counter of one name in a process, and this is its one watchdog.
        self.metric: Optional[Callable[[Any], None]] = None
        self._device_reading = reserved  # the fallback signal: device memory in use
        self._lock = threading.RLock()  # the first counter reading may come while the lock is held
        self.phase = START
        self.rank = f"pid {os.getpid()}"
        self.rank_info: Dict[str, Any] = {}
        self.counts = {START: 0, WARMUP: 0, SERVING: 0}
        self.events: List[Growth] = []
        self.known: Dict[str, Dict[str, int]] = {}
        self.warmup = WarmupRecord()
        self._warmup_started: Optional[float] = None
        self._inside: Dict[int, List] = {}  # thread id -> [since, reported, watched contexts open]
        self._monitor: Optional[threading.Thread] = None
        self.hang_reports = 0
        self.on_growth: List[Callable[[Growth], None]] = []
        self.measuring = False  # the context hook is installed (SGLANG_CP_SYMM_WATCHDOG on)
        self._known_at: Optional[int] = None  # the signal's reading when the pools were last read
        self.signal = "device memory in use (cudaMemGetInfo)"
        self.signal_note = ""  # why the allocator's counter is not the signal, when it was wanted
        self._counts: Optional[alloc_counter.Counts] = None
        self._known_counts = (0, 0, 0)  # (allocations, bytes, frees) when the pools were last read
        self._allocator_module: Any = None

    # -- the signal -----------------------------------------------------------------------
    def count_allocations(self, allocator_module: Any) -> Optional[Callable[[], None]]:
        """Make the allocator sglang will compile count its calls; the signal once its pool exists.

        Returns the undo, or None (with one line saying why) where the counter cannot be had.
        """
        if self._counts is not None and self._allocator_module is allocator_module:
            return lambda: None  # counting already (the hooks installed again in this process)
        undo, why = alloc_counter.install(allocator_module)
        if undo is None:
            self.fall_back(why)
            return None
        self._allocator_module = allocator_module
        self._reserved = self._read_until_located
        self.signal = "allocator counter (pending: the pool is not compiled yet)"
        return undo

    def _read_until_located(self) -> int:
        """The signal's reading before the counter is found: 0 while no pool exists (nothing can grow)."""
        if not alloc_counter.pool_exists(self._allocator_module):
            return 0
        with self._lock:
            if self._reserved != self._read_until_located:  # another thread got here first
                return self._reserved()
            address, why = alloc_counter.locate()
            if address is None:
                self.fall_back(why)
                self._known_at = None  # the pools were last read before they existed: read them again first
                return self._reserved()
            self._counts = alloc_counter.Counts(address)
            self._known_at = None  # the next reading is the baseline, where the counter proves itself
            self._reserved = self._counts.reader()
            self.signal = "allocator counter"
        return self._reserved()

    def fall_back(self, why: str) -> None:
        """Measure by the device memory in use from now on; one line says why."""
        self._counts = None
        self._reserved = self._device_reading
        if self._known_at is not None:  # the pools were read: the device memory now is the mark to rise from
            self._known_at = self._device_reading()
        self.signal = "device memory in use (cudaMemGetInfo)"
        self.signal_note = why
        logger.warning("sglang-cp-symm: the pool watchdog reads the device memory in use around each CP "
                       "all-gather (cudaMemGetInfo, some microseconds each) instead of the allocator's counter: "
                       "%s", why[:300])

    # -- the context hooks ------------------------------------------------------------
    def watch(self, code: Any) -> None:
        """Measure the contexts that the function with this code object opens (a CP all-gather)."""
        self.table.set_role(code, context_hooks.WATCH)  # the table keeps the code object, so its id stays its own

    def entered(self) -> None:
        """After a watched symmetric context (a CP all-gather's) was entered on this thread.

        Every call is on the hot path of a CP all-gather: one reading of the signal (the
        counter: a load from memory), one comparison, and the hang monitor's note (when
        this thread entered its outermost watched context, and how deep it is now).
        """
        reading = self._reserved()
        if reading != self._known_at:  # growth since the last reading is not this gather's
            self._observe(reading, OUTSIDE_AT_GATHER)
        ident = get_ident()
        entry = self._inside.get(ident)
        if entry is None:
            self._inside[ident] = [monotonic(), False, 1]
            if self._monitor is None:
                self._start_monitor()
        else:
            entry[2] += 1

    def leaving(self, frame: Any = None) -> Optional[Growth]:
        """Before the original ``__exit__`` (which, from 0.5.12, registers new segments collectively).

        ``frame``: where to start looking for the gather's line; by default this call's caller, looked
        up only when the pool grew (``call_site`` skips the plugin's and the context's own frames).
        """
        ident = get_ident()
        entry = self._inside.get(ident)
        if entry is None:
            return None
        if entry[2] == 1:
            del self._inside[ident]
        else:
            entry[2] -= 1
        reading = self._reserved()
        if reading == self._known_at:
            return None
        return self._observe(reading, frame if frame is not None else sys._getframe(1))

    def between_requests(self) -> Optional[Growth]:
        """One reading per request arrival: growth outside the measured contexts shows here."""
        reading = self._reserved()
        if reading == self._known_at:
            return None
        return self._observe(reading, OUTSIDE_AT_REQUEST)

    def _observe(self, reading: int, site: Any) -> Optional[Growth]:
        """One reading of the signal; a rise since the pools were last read is measured by their snapshots.

        ``site`` is a frame (the gather's, read only if the pools grew) or a description.
        """
        if self._known_at is None:  # the first reading: the pools as they are are the baseline
            self._pool_state(reading)
            return None
        if reading <= self._known_at:
            self._known_at = reading  # memory was freed (empty_cache): later rises count from here
            return None
        return self._confirm(site if isinstance(site, str) else call_site(site), reading)

    def _confirm(self, site: str, reading: Optional[int] = None) -> Optional[Growth]:
        """Read the pools; if they hold more than last read, that is one growth, counted in the current phase.

        With the counter, the allocations it saw are the growth, even where the snapshots' bytes
        did not rise (a segment freed and another allocated); their count must match the segments.
        """
        disagreement = None
        with self._lock:
            now = self._read_pools()
            grown = sum(max(0, s["bytes"] - self.known.get(n, {}).get("bytes", 0)) for n, s in now.items())
            seg_before = sum(s.get("segments", 0) for s in self.known.values())
            seg_after = sum(s["segments"] for s in now.values())
            allocations = 0
            if self._counts is not None:
                counts = self._counts.snapshot()
                since, self._known_counts = self._known_counts, counts
                allocations = counts[0] - since[0]
                if allocations - (counts[2] - since[2]) != seg_after - seg_before:
                    disagreement = (f"the allocator counted {allocations} allocation(s) and "
                                    f"{counts[2] - since[2]} free(s) where the pools' snapshots went from "
                                    f"{seg_before} to {seg_after} segment(s)")
                if grown <= 0 < allocations:
                    grown = counts[1] - since[1]
                reading = counts[0]
            self.known = now
            self._known_at = self._reserved() if reading is None else reading
            if grown <= 0:
                event = None  # the memory went elsewhere (activations, another allocator)
            else:
                event = Growth(self.phase, grown, seg_before, seg_after, site, time.time(), allocations)
                self.counts[self.phase] += 1
                self.events = (self.events + [event])[-_KEEP_EVENTS:]
        if disagreement is not None:
            self.fall_back(disagreement)
        if event is None:
            return None
        if self.phase == SERVING:
            logger.warning("%s; every rank of that communicator must grow the same now, or all of them wait "
                           "in the collective registration (growth #%d after warm-up)",
                           event.line(self.rank), self.counts[SERVING])
            write_rank_record(self)
        else:
            logger.info(event.line(self.rank))
        for callback in list(self.on_growth):
            try:
                callback(event)
            except Exception:  # a broken metric must not break a forward pass
                logger.debug("sglang-cp-symm: growth callback failed", exc_info=True)
        return event

    # -- the hang monitor ----------------------------------------------------------------
    def _start_monitor(self) -> None:
        with self._lock:
            if self._monitor is not None:
                return
            self._monitor = threading.Thread(target=self._watch, name="sglang-cp-symm-watchdog", daemon=True)
            self._monitor.start()

    def _watch(self) -> None:
        while True:
            time.sleep(_MONITOR_PERIOD_S)
            self.check_stuck(time.monotonic())

    def check_stuck(self, now: float) -> int:
        """Report, once each, the threads inside a symmetric context for longer than the limit."""
        stuck = [(ident, entry) for ident, entry in list(self._inside.items())
                 if not entry[1] and now - entry[0] >= HANG_REPORT_AFTER_S]
        if not stuck:
            return 0
        for ident, entry in stuck:
            entry[1] = True
            self.hang_reports += 1
            last = self.events[-1] if self.events else None
            grew = (f"; its last pool growth was {last.grown_bytes / 2**20:.1f} MiB at {last.site}"
                    if last is not None else "")
            logger.error("sglang-cp-symm: %s has been inside a symmetric-memory context at %s for %.0f s. A rank "
                         "waits there when it registers a new pool segment that another rank of the same "
                         "communicator did not create (a hang). Compare the ranks' 'symmetric pool grew' lines "
                         "or run 'sglang-cp-symm doctor --ranks'%s.", self.rank, thread_site(ident),
                         now - entry[0], grew)
        write_rank_record(self)
        return len(stuck)

    # -- warm-up phases, driven by the scheduler hook -----------------------------------------
    def begin_warmup(self, tokens: int) -> None:
        """A warm-up request arrived at this rank; the first one opens the phase."""
        with self._lock:
            if self.phase != WARMUP:
                self.phase = WARMUP
                self._warmup_started = time.monotonic()
                self.warmup = WarmupRecord(before=self._pool_state())
            self.warmup.prompts.append(tokens)

    def finish_warmup(self) -> Optional[str]:
        """Close the warm-up on this rank; returns its report line (None if no warm-up began here)."""
        with self._lock:
            started, self._warmup_started = self._warmup_started, None
            self.phase = SERVING
            if started is None:
                return None
            record = self.warmup
            record.seconds = round(time.monotonic() - started, 3)
            record.after = self._pool_state()
            record.growths = self.counts[WARMUP]
        return self.warmup_line()

    def traffic(self) -> None:
        """A request that is not the warm-up's: from now on growths count as run-time growths."""
        if self.phase == START:
            self.phase = SERVING

    def _read_pools(self) -> Dict[str, Dict[str, int]]:
        """Segments and bytes of every symmetric pool of this process, from their snapshots."""
        return {name: self._stats(pool) for name, pool in self._pools().items()}

    def _pool_state(self, reading: Optional[int] = None) -> Dict[str, Dict[str, int]]:
        """Read the pools as the new baseline (no growth counted); with the counter, prove it against them."""
        try:
            state = self._read_pools()
        except Exception as exc:  # a pool without snapshot support
            logger.debug("sglang-cp-symm: pool snapshot failed: %s", exc)
            return {}
        disagreement = None
        if self._counts is not None:
            counts = self._counts.snapshot()
            if counts[0] - counts[2] != sum(s["segments"] for s in state.values()):
                disagreement = (f"the allocator counted {counts[0]} allocation(s) and {counts[2]} free(s) where "
                                f"the pools' snapshots show {sum(s['segments'] for s in state.values())} "
                                f"segment(s)")
            self._known_counts, reading = counts, counts[0]
        self.known = state
        self._known_at = self._reserved() if reading is None else reading
        if disagreement is not None:
            self.fall_back(disagreement)
            self.known = state
            self._known_at = self._reserved()
        return state

    def warmup_line(self) -> str:
        r = self.warmup

        def fmt(state):
            if not state:
                return "none"
            return ", ".join(f"{n} {s['bytes'] / 2**20:.1f} MiB in {s['segments']} segment(s)"
                             for n, s in sorted(state.items()))

        return (f"sglang-cp-symm: {self.rank}: warm-up of {len(r.prompts)} prompt(s) "
                f"({', '.join(map(str, r.prompts))} tokens) took {r.seconds:.2f} s; symmetric pools before: "
                f"{fmt(r.before)}; after: {fmt(r.after)}; {r.growths} growth(s)")

    # -- the Prometheus counter (see the module docstring) ------------------------------------
    def count_in_metrics(self) -> bool:
        """Count the growths in a Prometheus counter; False where sglang's metrics are off."""
        if self.metric is None:
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                return False
            try:
                from prometheus_client import Counter
            except ImportError:
                return False
            counter = Counter(METRIC, "Symmetric-memory pool growths seen by sglang-cp-symm, by phase (start, "
                              "warm-up, serving); serving should stay 0", ["phase"])
            self.metric = lambda event: counter.labels(phase=event.phase).inc()
        if self.metric not in self.on_growth:
            self.on_growth.append(self.metric)
        return True

    def stop_metrics(self) -> None:
        """Stop counting; the counter stays registered, as prometheus_client cannot drop it safely."""
        if self.metric is not None and self.metric in self.on_growth:
            self.on_growth.remove(self.metric)

    def describe(self) -> dict:
        return {"rank": self.rank, "rank_info": self.rank_info, "phase": self.phase, "signal": self.signal,
                "signal_note": self.signal_note,
                "growths": dict(self.counts), "growths_after_warmup": self.counts[SERVING],
                "hang_reports": self.hang_reports, "warmup": asdict(self.warmup),
                "pools": self.known, "events": [asdict(e) for e in self.events[-10:]]}


# -- the per-rank records: files that the doctor and status() read ------------------------------
RUN_ID = "SGLANG_CP_SYMM_RUN_ID"


def report_dir() -> str:
    """``SGLANG_CP_SYMM_REPORT_DIR`` as ``settings`` checked it (a writable folder), else the default."""
    return read_settings().report_dir


def ensure_run_id() -> str:
    """One id per server launch, set in the first process and inherited by every process it spawns."""
    run = os.environ.get(RUN_ID)
    if not run:
        run = os.environ[RUN_ID] = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    return run


def write_rank_record(watchdog: PoolWatchdog) -> Optional[str]:
    """Write this rank's record as JSON, in the folder of the settings the plugin was applied with (else the
    environment's); returns the path, or None (with one warning) when it cannot."""
    folder = os.path.join(watchdog.report_dir or report_dir(), ensure_run_id())
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in watchdog.rank)
    path = os.path.join(folder, f"{name}.json")
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as out:
            json.dump(watchdog.describe(), out, indent=1)
        os.replace(tmp, path)
        return path
    except OSError as exc:
        if not getattr(watchdog, "_write_warned", False):
            watchdog._write_warned = True
            logger.warning("sglang-cp-symm: cannot write the rank record to %s (%s); set SGLANG_CP_SYMM_REPORT_DIR "
                           "to a writable folder", folder, exc)
        return None


def read_run(folder: Optional[str] = None, run: Optional[str] = None) -> Optional[dict]:
    """One launch's rank records (``{"run": id, "folder": path, "ranks": {name: record}}``), or None.

    ``run`` names the launch; by default the one whose folder changed last.
    """
    base = folder or report_dir()
    try:
        runs = sorted((d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))),
                      key=lambda d: os.path.getmtime(os.path.join(base, d)))
    except OSError:
        return None
    if run is not None:
        runs = [d for d in runs if d == run]
    if not runs:
        return None
    run_dir = os.path.join(base, runs[-1])
    ranks = {}
    for name in sorted(os.listdir(run_dir)):
        if name.endswith(".json"):
            try:
                with open(os.path.join(run_dir, name)) as f:
                    ranks[name[:-5]] = json.load(f)
            except (OSError, ValueError):
                continue  # a record being replaced right now
    return {"run": runs[-1], "folder": run_dir, "ranks": ranks}


def compare_ranks(run: dict) -> List[str]:
    """Findings across ranks: uneven pool segments are the precursor of the registration hang."""
    findings = []
    ranks = run["ranks"]
    stages: Dict[Any, Dict[str, int]] = {}  # pipeline stages hold different layers, so compare within one
    for name, r in ranks.items():
        stage = (r.get("rank_info") or {}).get("pp_rank")
        stages.setdefault(stage, {})[name] = sum(p.get("segments", 0) for p in r.get("pools", {}).values())
    for stage, segments in sorted(stages.items(), key=lambda item: str(item[0])):
        if len(set(segments.values())) > 1:
            where = f" of pipeline stage {stage}" if len(stages) > 1 else ""
            findings.append(f"ranks{where} hold different numbers of symmetric pool segments ("
                            + ", ".join(f"{n}: {s}" for n, s in sorted(segments.items()))
                            + "): a rank that grew alone waits in a collective registration")
    late = {name: r["growths_after_warmup"] for name, r in ranks.items() if r.get("growths_after_warmup")}
    if late:
        findings.append("pool growths after the warm-up: " + ", ".join(f"{n}: {c}" for n, c in sorted(late.items()))
                        + " (raise SGLANG_CP_SYMM_WARMUP_TOKENS or check which call site grew)")
    stuck = {name: r["hang_reports"] for name, r in ranks.items() if r.get("hang_reports")}
    if stuck:
        findings.append("ranks stuck in a symmetric-memory context: " + ", ".join(sorted(stuck)))
    return findings
