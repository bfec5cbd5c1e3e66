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
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from typing import Any, Callable, Dict, List, Optional

from .logs import logger
from .warmup_deadline import ABORT_ANSWER_S, UNWIND_S

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
