"""Send every DP rank its warm-up prompts under one deadline; when one rank fails or time runs out, stop them all.

The warm-up runs in the process of the HTTP server (or the offline ``Engine``) and
reaches the ranks through the tokenizer manager, one asyncio task per DP rank, each
sending its prompts one after another (``TokenizerManager.generate_request``, the
path of any request). Three things can go wrong, and each must end in bounded time
with every rank told:

- a rank fails (its request raises, or comes back with an ``abort`` finish reason):
  the other ranks must stop warming, not go on for minutes;
- time runs out (a rank that never answers; a prompt that waits in a full queue);
- a request the warm-up gave up on must not stay in a scheduler.

So, on the first failure or at the deadline: no rank sends another prompt; each
request still in flight is aborted through the tokenizer manager's own
``abort_request(rid)`` (tokenizer_manager.py: 0.5.6 line 1253, 0.5.11 line 1475,
0.5.23 line 2241; the signature ``(rid="", abort_all=False)`` is the same in every
release), which the scheduler honours wherever the request is (``Scheduler.abort_request``,
scheduler.py 0.5.11 line 3458: a queued request is dropped and answered with an abort,
a running one finishes at its next step); the task then ends when that answer
arrives, which sglang's own code path cleans up (``_handle_abort_req`` and
``_wait_one_response``). Only a task whose abort is not answered within the grace is
cancelled: none of these releases aborts a request whose generator is merely
cancelled (``generate_request`` has no ``finally`` for one request), so cancelling
first would leave the request running. The scheduler matches an abort by prefix
(``req.rid.startswith(recv_req.rid)``): warm-up rids are never empty, and no rid is a
prefix of another (``warmup.RID_PREFIX``, a rank and index, a random suffix of fixed length).

The completion markers (one one-token request per rank, so that each rank closes
its warm-up phase and logs its pool line) are sent in every case, under the same
grace, and aborted too when unanswered.

The deadline: how long the warm-up may keep a server from reporting ready (``warmup_deadline``), tied to
sglang's own timeouts.

Why a deadline at all: sglang awaits its named warm-ups in the HTTP server's
``lifespan`` with no timeout (``await execute_warmups(...)``, http_server.py 0.5.6
line 290, 0.5.11 line 382, 0.5.23 line 420), so a warm-up request that is never
answered (a rank that never replies, a prompt that waits in a full queue) would keep
the server from ever starting.

The default is the budget sglang gives its own warm-up request, which it sends right
after the named ones and before it marks the server Up: ``SGLANG_WARMUP_TIMEOUT``
when set above 0, else 600 s, or 1800 s on a PD prefill server ("deep gemm precache";
``_execute_server_warmup``, http_server.py 0.5.11 lines 1952-1990, the same in
0.5.6-0.5.23; the variable: environ.py, ``EnvFloat(-1)``). It is never below 1.5 x
``--watchdog-timeout`` (300 s by default), so that a forward that hangs is caught by
sglang's own watchdog first, with its stack dump (the watchdog kills between T and
1.5 T, ``utils/watchdog.py``). ``SGLANG_CP_SYMM_WARMUP_TIMEOUT`` replaces all of this.

The deadline bounds the warm-up's prompts on every DP rank together (the query of
the ranks' KV pools included). After it, or after a failure, the warm-up takes at most
``grace_s`` to stop the other ranks (abort, then cancel) and ``grace_s`` (plus a few
seconds to abort and unwind) for the per-rank completion markers: the start waits at
most ``bound_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional

from .logs import logger

#: sglang's warm-up request budget when ``SGLANG_WARMUP_TIMEOUT`` is not above 0 (http_server.py).
SGLANG_WARMUP_BUDGET_S = 600.0
#: The same on a PD prefill server.
SGLANG_PREFILL_WARMUP_BUDGET_S = 1800.0
#: ``--watchdog-timeout``'s default (server_args.py, 0.5.6-0.5.23).
SGLANG_WATCHDOG_TIMEOUT_S = 300.0
#: The deadline is at least this many watchdog timeouts (the watchdog kills between 1 and 1.5 of them).
WATCHDOG_MARGIN = 1.5
#: After a timeout or failure: the longest wait for aborted requests to end, and for the completion markers.
STOP_GRACE_S = 30.0
#: How long an unanswered completion marker's abort is given before its task is cancelled.
ABORT_ANSWER_S = 2.0
#: How long a cancelled task is given to unwind sglang's generator.
UNWIND_S = 1.0


@dataclasses.dataclass(frozen=True)
class Deadline:
    seconds: float  # the warm-up's prompts, all DP ranks together
    source: str  # where the figure came from, in words
    grace_s: float  # to stop the other ranks, and again for the markers

    @property
    def bound_s(self) -> float:
        """The longest the warm-up can keep the server from starting (prompts, stopping, markers)."""
        return self.seconds + 2 * self.grace_s + ABORT_ANSWER_S + 2 * UNWIND_S

    def describe(self) -> dict:
        return {"seconds": self.seconds, "source": self.source, "grace_s": self.grace_s, "bound_s": self.bound_s}


def warmup_deadline(override_s: Optional[float], sglang_warmup_timeout: Optional[float] = None,
                    watchdog_timeout: Optional[float] = None, disaggregation_mode: Any = "null") -> Deadline:
    """The deadline from ``SGLANG_CP_SYMM_WARMUP_TIMEOUT`` (``override_s``), else from sglang's own timeouts."""
    if override_s:
        seconds = float(override_s)
        return Deadline(seconds, f"SGLANG_CP_SYMM_WARMUP_TIMEOUT={override_s:g}", min(STOP_GRACE_S, seconds))
    prefill = str(disaggregation_mode).lower().endswith("prefill")
    if sglang_warmup_timeout is not None and sglang_warmup_timeout > 0:
        base, why = float(sglang_warmup_timeout), f"SGLANG_WARMUP_TIMEOUT={sglang_warmup_timeout:g}"
    elif prefill:
        base, why = SGLANG_PREFILL_WARMUP_BUDGET_S, "sglang's own warm-up budget on a PD prefill server"
    else:
        base, why = SGLANG_WARMUP_BUDGET_S, "sglang's own warm-up budget, SGLANG_WARMUP_TIMEOUT unset"
    watchdog = float(watchdog_timeout) if watchdog_timeout and watchdog_timeout > 0 else SGLANG_WATCHDOG_TIMEOUT_S
    floor = WATCHDOG_MARGIN * watchdog
    if floor > base:
        return Deadline(floor, f"1.5 x --watchdog-timeout {watchdog:g} s, above {why} ({base:g} s)", STOP_GRACE_S)
    return Deadline(base, why, STOP_GRACE_S)


def sglang_warmup_timeout(environ: Mapping[str, str]) -> Optional[float]:
    """``SGLANG_WARMUP_TIMEOUT`` in ``environ``, by sglang's own rule: ``EnvFloat(-1)`` in
    every supported release (checked by tests/engine/test_longest_forward_sources.py), so unset, empty or not a
    float is its default -1, which ``warmup_deadline`` reads as unset (None here; ``EnvField.get``, environ.py
    0.5.6 lines 23-37). The engine and the doctor both read it here."""
    raw = environ.get("SGLANG_WARMUP_TIMEOUT")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


# -- sending under the deadline ---------------------------------------------------------
DONE, FAILED, STOPPED, UNANSWERED, PENDING = "done", "failed", "stopped", "unanswered", "pending"


class RequestAborted(RuntimeError):
    """The server ended a warm-up request with an ``abort`` finish reason instead of raising."""


@dataclasses.dataclass
class RankRun:
    """What one DP rank was sent and how its sequence ended."""

    rank: int
    sent: List[int] = dataclasses.field(default_factory=list)  # prompt lengths, in order (the last may be aborted)
    finished: int = 0  # prompts answered in full
    inflight: Optional[str] = None  # the rid of the request now in flight
    aborted: List[str] = dataclasses.field(default_factory=list)  # rids the warm-up aborted
    state: str = PENDING
    error: Optional[str] = None
    stop: bool = False  # set once: send nothing more

    def describe(self) -> dict:
        return {"rank": self.rank, "sent": list(self.sent), "finished": self.finished, "state": self.state,
                "error": self.error, "aborted": list(self.aborted)}


class FanOutError(RuntimeError):
    """The warm-up did not complete on every rank; ``runs`` says what each rank got."""

    def __init__(self, message: str, runs: Dict[int, RankRun]) -> None:
        super().__init__(message)
        self.runs = runs


class WarmupTimeout(FanOutError):
    """The deadline passed before every rank finished."""


class RankFailed(FanOutError):
    """A rank's request failed; the other ranks were stopped."""


async def drain(tokenizer_manager: Any, request: Any) -> None:
    """Run one request to its end; an abort the tokenizer manager yields instead of raising is a failure too."""
    last = None
    async for last in tokenizer_manager.generate_request(request, None):
        pass
    reason = ((last or {}).get("meta_info") or {}).get("finish_reason") if isinstance(last, dict) else None
    if isinstance(reason, dict) and reason.get("type") == "abort":
        raise RequestAborted(f"the server aborted the request: {reason.get('message', reason)}")


async def abort(tokenizer_manager: Any, rid: str) -> bool:
    """Ask the server to abort ``rid`` through the tokenizer manager's own API; False if that raised."""
    if not rid:  # an empty rid would match every request by prefix
        return False
    try:
        result = tokenizer_manager.abort_request(rid)
        if inspect.isawaitable(result):  # a release that made it a coroutine
            await asyncio.wait_for(result, timeout=5.0)
        return True
    except Exception as exc:
        logger.info("sglang-cp-symm: could not abort warm-up request %s (%s: %s)", rid, type(exc).__name__, exc)
        return False


async def _sequence(tokenizer_manager: Any, make_request: Callable[[int, int, int], Any], run: RankRun,
                    prompts: List[int]) -> None:
    for index, length in enumerate(prompts):
        if run.stop:
            return
        request = make_request(run.rank, index, length)
        run.inflight = request.rid
        run.sent.append(length)
        try:
            await drain(tokenizer_manager, request)
        finally:
            run.inflight = None
        run.finished += 1
    run.state = DONE


async def _stop(tokenizer_manager: Any, tasks: Dict[asyncio.Future, RankRun], grace_s: float, state: str) -> None:
    """Stop these ranks: nothing more is sent, what is in flight is aborted, and a task whose abort is not
    answered within ``grace_s`` is cancelled (its state becomes ``unanswered``)."""
    for run in tasks.values():
        run.stop = True
        if run.state == PENDING:
            run.state = state
        if run.inflight:
            rid = run.inflight
            if await abort(tokenizer_manager, rid):
                run.aborted.append(rid)
    if not tasks:
        return
    _, unanswered = await asyncio.wait(list(tasks), timeout=grace_s)
    for task in unanswered:
        tasks[task].state = UNANSWERED
        task.cancel()
    if unanswered:
        await asyncio.wait(unanswered, timeout=UNWIND_S)  # let the cancellation unwind sglang's generator


def _error_of(task: asyncio.Future) -> Optional[BaseException]:
    return None if task.cancelled() else task.exception()


async def run_ranks(tokenizer_manager: Any, make_request: Callable[[int, int, int], Any],
                    prompts: Dict[int, List[int]], deadline_s: float, grace_s: float) -> Dict[int, RankRun]:
    """Every rank's prompts, concurrently across ranks, in order within one; raises ``RankFailed`` or
    ``WarmupTimeout`` (after stopping the other ranks) unless every rank finished within ``deadline_s``."""
    runs = {rank: RankRun(rank) for rank in prompts}
    tasks = {asyncio.ensure_future(_sequence(tokenizer_manager, make_request, runs[rank], lengths)): runs[rank]
             for rank, lengths in prompts.items()}
    try:
        done, pending = await asyncio.wait(list(tasks), timeout=max(0.0, deadline_s),
                                           return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:  # the server is shutting down during its warm-up: take the ranks' tasks along
        for task in tasks:
            task.cancel()
        raise
    failed = [(tasks[t], _error_of(t)) for t in done if _error_of(t) is not None]
    for run, exc in failed:
        run.state, run.error = FAILED, f"{type(exc).__name__}: {exc}"
    if not failed and not pending:
        return runs
    await _stop(tokenizer_manager, {t: tasks[t] for t in pending}, grace_s, STOPPED if failed else "timed out")
    for task in pending:  # a task that failed while it was being stopped (its abort answer) is still "stopped"
        if not task.cancelled() and task.done() and task.exception() is not None and tasks[task].error is None:
            tasks[task].error = f"{type(task.exception()).__name__}: {task.exception()}"
    if failed:
        run, exc = failed[0]
        others = [r.rank for r in runs.values() if r.rank != run.rank and r.state != DONE]
        told = f"; DP rank(s) {', '.join(map(str, others))} stopped, their requests aborted" if others else ""
        raise RankFailed(f"DP rank {run.rank} failed on its {run.sent[-1] if run.sent else '?'}-token prompt: "
                         f"{run.error}{told}", runs) from exc
    late = [r for r in runs.values() if r.state != DONE]
    where = ", ".join(f"DP rank {r.rank} on its {r.sent[-1] if r.sent else '?'}-token prompt"
                      + (" (no answer to the abort)" if r.state == UNANSWERED else "") for r in late)
    raise WarmupTimeout(f"still waiting: {where}", runs)


async def send_markers(tokenizer_manager: Any, make_marker: Callable[[int], Any], ranks: List[int],
                       grace_s: float) -> Dict[int, str]:
    """One completion marker per rank, each awaited at most ``grace_s``; an unanswered one is aborted.

    Returns ``{rank: "done" | "failed: ..." | "unanswered"}``. A rank closes its warm-up
    phase when the marker *arrives* at its scheduler, so an answer is not required for that.
    """
    markers = {rank: make_marker(rank) for rank in ranks}
    tasks = {asyncio.ensure_future(drain(tokenizer_manager, m)): rank for rank, m in markers.items()}
    outcome: Dict[int, str] = {}
    if not tasks:
        return outcome
    done, pending = await asyncio.wait(list(tasks), timeout=grace_s)
    for task in done:
        exc = _error_of(task)
        outcome[tasks[task]] = DONE if exc is None else f"{FAILED}: {type(exc).__name__}: {exc}"
    for task in pending:
        await abort(tokenizer_manager, markers[tasks[task]].rid)
        outcome[tasks[task]] = UNANSWERED
    if pending:
        _, still = await asyncio.wait(pending, timeout=min(grace_s, ABORT_ANSWER_S))
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=UNWIND_S)
    return dict(sorted(outcome.items()))
