"""The warm-up: the longest forward the server can schedule for one request, once per DP rank, before traffic.

Why: nothing at sglang start-up runs a CP prefill (CUDA-graph capture is
decode-only; the general warm-up prompt is a few tokens), so the first long
request grows the symmetric pool: an ``ncclMemAlloc`` and a collective window
registration per new segment, on every rank at once, and a hang if one rank grows
while another does not. Run before any traffic, the prefills below put every CP
all-gather buffer the server can need in the pool, registered with the
communicator of the group that uses it.

What runs, per DP rank and in this order (``plan_for``):
1. one prompt whose prefill holds the largest forward the scheduler would run for
   one request on this server (``scheduler_rules.longest_forward``: the chunk per DP rank,
   or with chunking off the longest prompt it both accepts and admits; the ranks'
   KV pools are asked for first, through sglang's ``get_internal_state``);
2. a few short prompts, one at each length where a gathered buffer crosses the
   allocator's 1 MiB "small" limit (``allocator_model.small_pool_tokens``, from the served
   model's config): the small segments reach their peak, which the long prompt
   never touches.
Each has random token ids (no radix-cache hit shortens it) and ``max_new_tokens=1``.

Said before it is done: one INFO line gives the plan (the longest forward, where the
figure came from, the symmetric-pool bytes its CP buffers need, the deadline), one
WARNING when chunking is off and that forward is far above a chunk, and a capped
warm-up (``SGLANG_CP_SYMM_WARMUP_TOKENS``) says how much growth it leaves to serving.

Bounded: every wait is under one deadline (``warmup_deadline``); on a timeout or a
failure on any rank the other ranks are stopped and their requests aborted
(``warmup_fanout``), the completion markers still go out, and the server starts with
one warning; strict mode refuses to start instead.

Where it runs (one code path per mechanism; the register ``targets.HOOKS`` says where each attaches):
- HTTP server: sglang's own named warm-up ``cp_symm_max_tokens``, added to
  ``--warmups`` when the command line is read. sglang runs named warm-ups in its
  ``lifespan`` after every scheduler reported ready (so after CUDA-graph capture and
  the pool pre-allocation) and before the general warm-up marks the server Up; the
  requests go through the tokenizer manager like any request, so every rank of
  every group runs the forwards in lockstep on its serving stream.
- Offline ``Engine`` (no named warm-ups in any release) and any launch that did not
  read ``--warmups``: the first request that reaches the tokenizer manager waits
  for the same warm-up (``ensure_warmed``). An Engine is built inside
  ``Engine.__init__``, which is also where 0.5.11+ load the plugin, so no hook on
  ``__init__`` could run for that very engine.

Each rank reports through the scheduler hook (``observe_request``): the first
warm-up request opens the rank's warm-up phase; a one-token marker request sent
after the last one closes it and makes the rank log its pool line (the first other
request closes it where no marker arrived).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
from typing import Any, Awaitable, Callable, List, Optional

from .allocator_model import (
    PREALLOC_VARIABLE,
    PoolSizing,
    capped_words,
    pool_words,
    prealloc_gib_from,
    shape_from_config,
    size_pool,
    sizing_fields,
)
from .scheduler_rules import (
    LongestForward,
    SizingError,
    attention_tp_size,
    far_above_message,
    longest_forward,
    whence_words,
)
from .warmup_fanout import (
    Deadline,
    FanOutError,
    RankFailed,
    WarmupTimeout,
    run_ranks,
    send_markers,
    sglang_warmup_timeout,
    warmup_deadline,
)
from .watchdog import WARMUP, PoolWatchdog, write_rank_record
from .logs import logger


WARMUP_NAME = "cp_symm_max_tokens"
RID_PREFIX = "cp-symm-warmup-"
DONE_PREFIX = RID_PREFIX + "done-"


class WarmupFailed(RuntimeError):
    """Strict mode: the warm-up failed, and the operator asked that the server not start without it."""


@dataclasses.dataclass
class WarmupState:
    """What this process's warm-up did (the HTTP server's or the Engine's process); the plugin object holds it
    (``activation.Plugin.warmup``), the hooks that run the warm-up are handed it."""

    result: dict = dataclasses.field(default_factory=dict)  # also while it runs: the plan, for the status line
    task: Optional[asyncio.Future] = None
    done: bool = False  # over: ran, failed, timed out or skipped (``_keep``)


def resolved_arg(server_args: Any, name: str, default: Any = None) -> Any:
    """A server argument as the server resolved it.

    From 0.5.19 the fields keep the raw input and the resolved values come from
    ``resolved_dict()`` (server_args.py 0.5.19 line 3708; 0.5.23 resolves in
    ``resolve_once()``); earlier releases resolve them in place in ``__post_init__``.
    """
    resolved = getattr(server_args, "resolved_dict", None)
    if callable(resolved):
        try:
            values = resolved()
            if name in values and values[name] is not None:
                return values[name]
        except Exception:
            pass
    value = getattr(server_args, name, default)
    return default if value is None else value


def cp_size_of(server_args: Any) -> int:
    """The attention-CP size: ``attn_cp_size`` (0.5.9+, also set by the DSA/MLA CP switches), or on
    0.5.6-0.5.8, where NSA prefill CP runs over the attention-TP group, that group's size."""
    size = int(resolved_arg(server_args, "attn_cp_size", 1) or 1)
    if size > 1:
        return size
    if resolved_arg(server_args, "enable_nsa_prefill_context_parallel", False):
        tp = int(resolved_arg(server_args, "tp_size", 1) or 1)
        return max(1, tp // attention_dp_of(server_args))
    return 1


def attention_dp_of(server_args: Any) -> int:
    """Attention-DP groups per replica: ``attn_dp_size`` (0.5.22+), else ``dp_size`` under DP attention."""
    attn_dp = resolved_arg(server_args, "attn_dp_size", None)
    if attn_dp:
        return int(attn_dp)
    return int(resolved_arg(server_args, "dp_size", 1) or 1) if resolved_arg(server_args, "enable_dp_attention") else 1


def dp_ranks_of(server_args: Any) -> int:
    """How many DP ranks requests are routed to: ``dp_size`` (0.5.6-0.5.21), ``dp_size * attn_dp_size``
    (0.5.22+, where ``--dp-size N --enable-dp-attention`` becomes ``attn_dp_size=N``; 0.5.23's own
    ``num_dp_ranks``, which its warm-ups fan out over)."""
    dp = int(resolved_arg(server_args, "dp_size", 1) or 1)
    attn_dp = resolved_arg(server_args, "attn_dp_size", None)
    return dp * int(attn_dp) if attn_dp else dp


@dataclasses.dataclass(frozen=True)
class WarmupPlan:
    prompts: List[int]  # prompt lengths, sent in this order to each DP rank
    dp_size: int
    cp_size: int
    route_field: Optional[str]  # GenerateReqInput's DP routing field: routed_dp_rank (0.5.11+) or data_parallel_rank
    vocab_size: int
    forward: LongestForward
    pool_tokens: Optional[int] = None  # one DP rank's KV pool, as its scheduler reported it
    pool_source: str = ""
    sizing: Optional[PoolSizing] = None  # the pool it fills (``allocator_model.size_pool``); None: model unread

    @property
    def tokens(self) -> int:
        return self.prompts[0]

    def describe(self) -> dict:
        return {"prompts": list(self.prompts), "dp_size": self.dp_size, "cp_size": self.cp_size,
                "longest_forward": self.forward.describe(), "pool_tokens": self.pool_tokens,
                "pool_source": self.pool_source, **sizing_fields(self.sizing)}


def _route_field(request_class: Any) -> Optional[str]:
    names = {f.name for f in dataclasses.fields(request_class)}
    return next((n for n in ("routed_dp_rank", "data_parallel_rank") if n in names), None)


def _model_shape(tokenizer_manager: Any, server_args: Any, cp_size: int):
    """The served model's gathered rows, or None where its config cannot be read (then no short prompts)."""
    hf_config = getattr(getattr(tokenizer_manager, "model_config", None), "hf_config", None)
    if hf_config is None:
        return None
    config = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(vars(hf_config))
    tp = int(resolved_arg(server_args, "tp_size", 1) or 1)
    attn_tp = attention_tp_size(tp, attention_dp_of(server_args), cp_size)
    try:  # "auto" (the model's dtype) counts as bf16 in the dtype table
        return shape_from_config(config, str(resolved_arg(server_args, "kv_cache_dtype", "auto")), attn_tp)
    except SizingError as exc:
        logger.info("sglang-cp-symm: warm-up without short prompts: %s", exc)
        return None


def _stage_send(settings: Any, decision: Any) -> bool:
    """Whether the CP gathers stage their send buffers in the pool too (the NCCL policy's ``decision``, the
    patcher's; the switch where there is none yet)."""
    return bool(decision.stage_send) if decision is not None else bool(getattr(settings, "send", False))


def plan_for(tokenizer_manager: Any, request_class: Any, override: Optional[int] = None,
             pool_tokens: Optional[int] = None, pool_source: str = "", send: bool = False,
             release: Any = None) -> WarmupPlan:
    """The warm-up's prompts and fan-out, from the running server's own resolved arguments.

    ``pool_tokens``: one DP rank's KV pool as its scheduler reported it (``reported_pool_tokens``);
    without it the pool is inferred from ``max_req_input_len`` (``scheduler_rules.longest_admitted_prompt``).
    """
    from ..releases import installed_sglang

    release = installed_sglang() if release is None else release
    server_args = tokenizer_manager.server_args
    model_config = tokenizer_manager.model_config
    cp = cp_size_of(server_args)
    forward = longest_forward(resolved_arg(server_args, "chunked_prefill_size"),
                              resolved_arg(server_args, "page_size", 1),
                              getattr(tokenizer_manager, "max_req_input_len", None),
                              getattr(model_config, "context_len", None), pool_tokens, release, override)
    shape = _model_shape(tokenizer_manager, server_args, cp)
    sized = None if shape is None else size_pool(
        forward, cp, shape, send, release, prealloc_gib_from(os.environ.get(PREALLOC_VARIABLE)), plugin_on=True)
    short = list(sized.short_prompts) if sized else []  # the model's config unread: no short prompts
    return WarmupPlan(prompts=[forward.prompt] + short, dp_size=dp_ranks_of(server_args), cp_size=cp,
                      route_field=_route_field(request_class), vocab_size=int(model_config.vocab_size),
                      forward=forward, pool_tokens=pool_tokens, pool_source=pool_source, sizing=sized)


#: The longest the warm-up waits for the ranks to report their KV pools (a tenth of the deadline when shorter).
POOL_QUERY_S = 10.0


async def reported_pool_tokens(tokenizer_manager: Any, timeout_s: float) -> tuple:
    """One DP rank's KV pool in tokens (the smallest of all ranks), as the schedulers report it, and whence.

    sglang's own ``get_internal_state()`` (tokenizer_communicator_mixin.py 0.5.6 line 701,
    tokenizer_control_mixin.py 0.5.11 line 780, 0.5.23 line 967): each DP rank answers with
    ``memory_usage.token_capacity = max_total_num_tokens`` (scheduler.py 0.5.6 line 2265, 0.5.11
    line 3378; scheduler_components/memory_usage.py 0.5.17+ line 33). The call is shielded, never
    cancelled: its communicator admits one call at a time, and a cancelled one would leave it
    waiting for good (``_Communicator.queueing_call``); past ``timeout_s`` the answer is just not
    awaited. Returns ``(None, why)`` where nothing usable came back.
    """
    getter = getattr(tokenizer_manager, "get_internal_state", None)
    if not callable(getter):
        return None, "not reported (no get_internal_state here)"
    try:
        start_loop = getattr(tokenizer_manager, "auto_create_handle_loop", None)
        if callable(start_loop):  # 0.5.6-0.5.10's get_internal_state does not start the receive loop itself
            start_loop()
        task = asyncio.ensure_future(getter())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a late failure is not "never retrieved"
        states = await asyncio.wait_for(asyncio.shield(task), timeout=timeout_s)
    except asyncio.TimeoutError:
        return None, f"not reported within {timeout_s:.1f} s"
    except Exception as exc:
        return None, f"not reported ({type(exc).__name__}: {str(exc)[:100]})"
    capacities = []
    for state in states or ():
        try:
            capacities.append(int(state["memory_usage"]["token_capacity"]))
        except (KeyError, TypeError, ValueError):
            continue
    if not capacities:
        return None, "not reported (no token_capacity in the ranks' internal state)"
    return min(capacities), f"reported by {len(capacities)} DP rank(s)"


def deadline_for(settings: Any, server_args: Any, disaggregation_mode: str) -> Deadline:
    """The warm-up's deadline for this server (``warmup_deadline``); never raises."""
    try:
        watchdog = float(resolved_arg(server_args, "watchdog_timeout", None))
    except (TypeError, ValueError):  # unset, or not a number: sglang's own default applies
        watchdog = None
    return warmup_deadline(settings.warmup_timeout_s, sglang_warmup_timeout(os.environ), watchdog, disaggregation_mode)


def _mib(value: int) -> str:
    return f"{value / 2**20:.1f} MiB"


def plan_line(plan: WarmupPlan, deadline: Deadline, watchdog_on: bool) -> str:
    """The INFO line logged before the first warm-up request: what will run, whence, what it costs, how long."""
    fwd = plan.forward
    head = f"longest forward {fwd.tokens} tokens ({whence_words(fwd.describe())})"
    if plan.prompts[0] != fwd.tokens:
        head += f" in a {plan.prompts[0]}-token prompt"
    short = f", then {', '.join(map(str, plan.prompts[1:]))} tokens" if len(plan.prompts) > 1 else ""
    if plan.sizing is not None:
        cost = (f"CP buffers {pool_words(plan.sizing)} ({plan.sizing.prealloc['state']}: "
                f"{plan.sizing.prealloc['message']})")
    else:
        cost = "its CP buffers' size is unknown (the model config could not be read)"
    line = (f"sglang-cp-symm: warm-up plan: {head}{short}, on each of {plan.dp_size} DP rank(s) (cp {plan.cp_size}, "
            f"KV pool {plan.pool_tokens if plan.pool_tokens else 'unknown'}: {plan.pool_source or 'not asked'}); "
            f"{cost}; deadline {deadline.seconds:g} s ({deadline.source}), the start waits at most "
            f"{deadline.bound_s:g} s")
    for extra in (capped_words(fwd, plan.sizing, watchdog_on), fwd.note):
        if extra:
            line += f"; {extra}"
    return line


def far_above_warning(plan: WarmupPlan) -> Optional[str]:
    """One WARNING when chunking is off and the longest forward is far above the chunk a server would use."""
    message = far_above_message(plan.forward)
    return f"sglang-cp-symm: {message}" if message else None


def _request(request_class: Any, plan: WarmupPlan, length: int, rid: str, dp_rank: int, rng: random.Random,
             disaggregation_mode: str, fake_bootstrap_host: Optional[str]) -> Any:
    ids = [rng.randrange(plan.vocab_size) for _ in range(length)]
    req = request_class(input_ids=ids, sampling_params={"max_new_tokens": 1, "temperature": 0.0}, rid=rid)
    if plan.dp_size > 1 and plan.route_field:
        setattr(req, plan.route_field, dp_rank)
    if disaggregation_mode == "prefill":  # a prefill server asserts a bootstrap room, as sglang's own warm-ups set
        req.bootstrap_room = dp_rank
        req.bootstrap_host = fake_bootstrap_host
    return req


def failure_message(plan: Optional[WarmupPlan], exc: BaseException, deadline: Optional[Deadline] = None) -> str:
    what = f"{plan.tokens}-token prefill on {plan.dp_size} DP rank(s)" if plan else "the warm-up"
    if isinstance(exc, WarmupTimeout):
        limit = f"{deadline.seconds:g} s deadline ({deadline.source})" if deadline else "deadline"
        how = (f"did not finish within its {limit}, {exc}; the other ranks were stopped and the requests in flight "
               "aborted")
        fix = ("Raise SGLANG_CP_SYMM_WARMUP_TIMEOUT if the server is merely slow, or check the rank named (a full "
               "queue, a rank that does not answer)")
    else:
        how = f"failed: {exc}" if isinstance(exc, RankFailed) else f"failed: {type(exc).__name__}: {exc}"
        fix = "Lower SGLANG_CP_SYMM_WARMUP_TOKENS or free memory"
    return (f"sglang-cp-symm: the CP warm-up ({what}) {how}. The server starts anyway; the symmetric pool may "
            "still grow at run time: the first long requests pay for it (an ncclMemAlloc plus a collective window "
            "registration per new segment, about 2 ms each on one H100, and a hang if ranks grow unevenly); the "
            f"watchdog reports each growth. {fix}; SGLANG_CP_SYMM_WARMUP=0 turns the warm-up off.")


def switched_off(enabled: bool, warmup_on: bool, enable_symm_mem: bool) -> Optional[str]:
    """Why the switches skip the warm-up, or None: the plugin, ``SGLANG_CP_SYMM_WARMUP``, ``--enable-symm-mem``.
    The doctor says it next to the warm-up it sizes; the engine skips on it (``skip_reason``)."""
    if not enabled:
        return "the plugin is off"
    if not warmup_on:
        return "SGLANG_CP_SYMM_WARMUP is off"
    if not enable_symm_mem:
        return "--enable-symm-mem is off: there is no symmetric pool to fill"
    return None


def nothing_to_warm(disaggregation_mode: Any, generation: bool, cp_size: int) -> Optional[str]:
    """Why a server of this shape has no CP prefill to warm, or None (the doctor and the engine alike)."""
    if str(disaggregation_mode) == "decode":
        return "a PD decode server runs no prefill"
    if not generation:
        return "the model is not a generation model"
    if cp_size <= 1:
        return "attention context parallelism is off (attn_cp_size 1): no CP all-gather to warm"
    return None


def skip_reason(settings: Any, server_args: Any, tokenizer_manager: Any, disaggregation_mode: str) -> Optional[str]:
    """Why this server's warm-up is skipped, or None: the switches first, then the server's shape."""
    return (switched_off(settings.enabled, settings.warmup, bool(resolved_arg(server_args, "enable_symm_mem", False)))
            or nothing_to_warm(disaggregation_mode, getattr(tokenizer_manager, "is_generation", True),
                               cp_size_of(server_args)))


async def run_warmup(disaggregation_mode: str, tokenizer_manager: Any, state: WarmupState, settings: Any,
                     decision: Any = None) -> dict:
    """The named warm-up ``cp_symm_max_tokens`` (sglang calls it as ``fn(disaggregation_mode, tokenizer_manager)``;
    the hook that registers it binds the rest: the plugin object's ``state``, the ``settings`` it was applied
    with and the patcher's NCCL ``decision``).

    Runs once per process; later calls return the first result. Bounded by its deadline
    (``Deadline.bound_s`` at most). Never raises unless strict mode is on; what it did is
    returned and kept in ``state.result``.
    """
    if state.done:
        return state.result
    result = {"ran": False, "prompts": None, "dp_size": None, "seconds": None, "error": None, "skipped": None,
              "timed_out": False, "plan": None, "deadline": None, "ranks": None, "markers": None}
    server_args = tokenizer_manager.server_args
    reason = skip_reason(settings, server_args, tokenizer_manager, disaggregation_mode)
    if reason:
        result["skipped"] = reason
        if settings.enabled:
            logger.info("sglang-cp-symm: warm-up skipped: %s", reason)
        return _keep(state, result)
    from sglang.srt.managers.io_struct import GenerateReqInput

    try:
        from sglang.srt.disaggregation.utils import FAKE_BOOTSTRAP_HOST
    except ImportError:
        FAKE_BOOTSTRAP_HOST = None
    plan = failure = None
    started = time.monotonic()
    deadline = deadline_for(settings, server_args, disaggregation_mode)
    result["deadline"] = deadline.describe()
    try:
        pool, pool_source = await reported_pool_tokens(tokenizer_manager,
                                                       min(POOL_QUERY_S, max(0.1, deadline.seconds / 10)))
        plan = plan_for(tokenizer_manager, GenerateReqInput, settings.warmup_tokens, pool, pool_source,
                        _stage_send(settings, decision))
        result.update(prompts=plan.prompts, dp_size=plan.dp_size, plan=plan.describe())
        state.result = dict(result)  # what it has planned so far, while it runs (status() reads it)
        logger.info(plan_line(plan, deadline, settings.watchdog))
        warning = far_above_warning(plan)
        if warning:
            logger.warning(warning)
        rng = random.Random()  # fresh ids every time: a radix-cache hit would shorten the prefill

        def make_request(rank: int, index: int, length: int) -> Any:
            rid = f"{RID_PREFIX}{rank}-{index}-{rng.getrandbits(32):08x}"
            return _request(GenerateReqInput, plan, length, rid, rank, rng, disaggregation_mode, FAKE_BOOTSTRAP_HOST)

        runs = await run_ranks(tokenizer_manager, make_request, {r: plan.prompts for r in range(plan.dp_size)},
                               deadline.seconds - (time.monotonic() - started), deadline.grace_s)
        result.update(ran=True, ranks={r: run.describe() for r, run in runs.items()})
    except Exception as exc:
        failure = exc
        result.update(error=f"{type(exc).__name__}: {exc}", timed_out=isinstance(exc, WarmupTimeout))
        if isinstance(exc, FanOutError):
            result["ranks"] = {r: run.describe() for r, run in exc.runs.items()}
    result["markers"] = await _send_markers(tokenizer_manager, GenerateReqInput, plan, disaggregation_mode,
                                            FAKE_BOOTSTRAP_HOST, deadline)
    result["seconds"] = round(time.monotonic() - started, 3)
    _keep(state, result)
    if failure is None:
        logger.info("sglang-cp-symm: warm-up done in %.2f s; each rank logs its pool line", result["seconds"])
        return result
    message = failure_message(plan, failure, deadline)
    if settings.strict:
        raise WarmupFailed(f"sglang-cp-symm strict mode: {message}") from failure
    logger.warning(message)
    return result


async def _send_markers(tokenizer_manager, request_class, plan, disaggregation_mode, bootstrap_host,
                        deadline: Deadline) -> Optional[dict]:
    """One one-token request per DP rank: each rank closes its warm-up phase and logs its line on receipt."""
    if plan is None:
        return None
    rng = random.Random()

    def make_marker(rank: int) -> Any:
        return _request(request_class, plan, 1, f"{DONE_PREFIX}{rank}-{rng.getrandbits(32):08x}", rank, rng,
                        disaggregation_mode, bootstrap_host)

    outcome = await send_markers(tokenizer_manager, make_marker, list(range(plan.dp_size)), deadline.grace_s)
    missed = {r: o for r, o in outcome.items() if o != "done"}
    if missed:  # the ranks then close their warm-up phase on the first real request
        logger.info("sglang-cp-symm: warm-up completion marker not answered on DP rank(s) %s; those ranks close "
                    "their warm-up on the first request", ", ".join(f"{r} ({o})" for r, o in sorted(missed.items())))
    return outcome


def _keep(state: WarmupState, result: dict) -> dict:
    """The warm-up is over (ran, failed, timed out or skipped): keep what it did."""
    state.result = dict(result)
    state.done = True
    return result


def status_words(settings: Any, result: dict) -> str:
    """The warm-up's part of the status line: the switch before the server starts, the plan once it is
    known, and how it ended (``result``: the process's ``WarmupState.result``)."""
    if not settings.warmup:
        return "off (SGLANG_CP_SYMM_WARMUP=0)"
    if result.get("skipped"):
        return f"skipped ({result['skipped']})"
    plan = result.get("plan")
    deadline = result.get("deadline") or {}
    if not plan:
        cap = f", capped at {settings.warmup_tokens} tokens" if settings.warmup_tokens else ""
        limit = (f"{settings.warmup_timeout_s} s (SGLANG_CP_SYMM_WARMUP_TIMEOUT)" if settings.warmup_timeout_s
                 else "sglang's own warm-up budget (SGLANG_WARMUP_TIMEOUT, else 600 s), at least 1.5 x "
                      "--watchdog-timeout")
        return (f"on (longest forward: the server's largest for one request{cap}, logged before it runs; "
                f"deadline {limit})")
    fwd = plan.get("longest_forward") or {}
    need = plan.get("need_bytes")
    figures = (f"longest forward {fwd.get('tokens')} tokens ({whence_words(fwd)})"
               + (f", CP buffers {_mib(need)}" if need is not None else "")
               + (f", pool growth expected {_mib(plan['growth_bytes'])}" if plan.get("growth_bytes") is not None else "")
               + (f", {_mib(plan['left_bytes'])}-{_mib(plan['left_most_bytes'] or plan['left_bytes'])} of growth "
                  "left to serving" if plan.get("left_bytes") else "")
               + f", {plan.get('dp_size')} DP rank(s), deadline {deadline.get('seconds', 0):g} s")
    if result.get("ran"):
        return f"done in {result['seconds']:.2f} s: {figures}"
    if result.get("error"):
        ended = "timed out" if result.get("timed_out") else "failed"
        return f"{ended} after {result.get('seconds') or 0:.2f} s, the pool may grow at run time: {figures}"
    return f"running: {figures}"


def is_warmup_request(obj: Any) -> bool:
    rid = getattr(obj, "rid", None)
    return isinstance(rid, str) and rid.startswith(RID_PREFIX)


async def ensure_warmed(tokenizer_manager: Any, state: WarmupState,
                        run: Callable[[str, Any], Awaitable[dict]]) -> dict:
    """Run the warm-up once in this process before the request that called this goes on.

    ``run(disaggregation_mode, tokenizer_manager)`` is the warm-up as the hooks bound it (``run_warmup``).
    Concurrent first requests all wait for the same warm-up; the warm-up's own
    requests never wait (the caller checks ``is_warmup_request``).
    """
    if state.done:
        return state.result
    if state.task is None:
        mode = resolved_arg(tokenizer_manager.server_args, "disaggregation_mode", "null")
        state.task = asyncio.ensure_future(run(mode, tokenizer_manager))
    return await asyncio.shield(state.task)


# -- the per-rank side, driven by the scheduler hook -----------------------------------------------
def rank_name(scheduler: Any) -> str:
    parts = []
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            parts.append(f"rank {dist.get_rank()}")
    except Exception:
        pass
    details = [f"{label} {getattr(scheduler, attr)}" for label, attr in
               (("tp", "tp_rank"), ("dp", "dp_rank"), ("pp", "pp_rank")) if getattr(scheduler, attr, None) is not None]
    name = parts[0] if parts else f"tp rank {getattr(scheduler, 'tp_rank', '?')}"
    return f"{name} ({', '.join(details)})" if details else name


def observe_request(scheduler: Any, request: Any, watchdog: PoolWatchdog) -> Optional[str]:
    """One request arrived at this rank's scheduler (``watchdog``: the plugin object's); returns the warm-up line
    when this closed the warm-up."""
    if not is_warmup_request(request):
        line = None
        if watchdog.phase == WARMUP:  # the completion marker never arrived (a warm-up cut short)
            line = watchdog.finish_warmup()
            if line is not None:
                line += " (closed by the first request: no completion marker arrived)"
                logger.info(line)
                write_rank_record(watchdog)
        watchdog.traffic()
        if watchdog.measuring:
            watchdog.between_requests()
        return line
    watchdog.rank = rank_name(scheduler)
    watchdog.rank_info = {k: getattr(scheduler, k, None) for k in ("tp_rank", "dp_rank", "pp_rank")}
    if request.rid.startswith(DONE_PREFIX):
        line = watchdog.finish_warmup()
        if line is not None:
            logger.info(line)
            write_rank_record(watchdog)
        return line
    watchdog.begin_warmup(len(getattr(request, "input_ids", None) or ()))
    return None
