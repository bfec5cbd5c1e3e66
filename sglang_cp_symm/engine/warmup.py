"""The warm-up: the longest prefill the server can schedule, once per DP rank, before it serves traffic.

Why: nothing at sglang start-up runs a CP prefill (CUDA-graph capture is
decode-only; the general warm-up prompt is a few tokens), so the first long
request grows the symmetric pool: an ``ncclMemAlloc`` and a collective window
registration per new segment, on every rank at once, and a hang if one rank grows
while another does not. Run before any traffic, the prefills below put every CP
all-gather buffer the server can need in the pool, registered with the
communicator of the group that uses it.

What runs, per DP rank and in this order (``plan_for``):
1. one prompt whose prefill extends the most tokens one forward can carry
   (``sizing.warmup_prompt_tokens``): the large segments reach their peak;
2. a few short prompts, one at each length where a gathered buffer crosses the
   allocator's 1 MiB "small" limit (``sizing.small_pool_tokens``, from the served
   model's config): the small segments reach their peak, which the long prompt
   never touches.
Each has random token ids (no radix-cache hit shortens it) and ``max_new_tokens=1``.

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
after the last one closes it and makes the rank log its pool line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Any, List, Optional

from . import settings as switches
from .sizing import SizingError, attention_tp_size, shape_from_config, small_pool_tokens, warmup_prompt_tokens
from .watchdog import WATCHDOG, write_rank_record
from .logs import logger


WARMUP_NAME = "cp_symm_max_tokens"
RID_PREFIX = "cp-symm-warmup-"
DONE_PREFIX = RID_PREFIX + "done-"


class WarmupFailed(RuntimeError):
    """Strict mode: the warm-up failed, and the operator asked that the server not start without it."""


@dataclasses.dataclass
class _ProcessState:
    """What this process's warm-up did (the HTTP server's or the Engine's process)."""

    result: dict = dataclasses.field(default_factory=dict)
    task: Optional[asyncio.Future] = None

    @property
    def done(self) -> bool:
        return bool(self.result)


STATE = _ProcessState()


def resolved_arg(server_args: Any, name: str, default: Any = None) -> Any:
    """A server argument as the server resolved it.

    0.5.23 resolves arguments in a pipeline and publishes them (``resolved_dict()``);
    earlier releases resolve them in place in ``__post_init__``.
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
    """Attention-DP groups per replica: ``attn_dp_size`` (0.5.23), else ``dp_size`` under DP attention."""
    attn_dp = resolved_arg(server_args, "attn_dp_size", None)
    if attn_dp:
        return int(attn_dp)
    return int(resolved_arg(server_args, "dp_size", 1) or 1) if resolved_arg(server_args, "enable_dp_attention") else 1


def dp_ranks_of(server_args: Any) -> int:
    """How many DP ranks requests are routed to: ``dp_size`` (0.5.6-0.5.22), ``dp_size * attn_dp_size``
    (0.5.23, sglang's own ``num_dp_ranks``, which its warm-ups fan out over)."""
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
    source: str

    @property
    def tokens(self) -> int:
        return self.prompts[0]


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


def plan_for(tokenizer_manager: Any, request_class: Any, override: Optional[int] = None) -> WarmupPlan:
    """The warm-up's prompts and fan-out, from the running server's own resolved arguments."""
    server_args = tokenizer_manager.server_args
    model_config = tokenizer_manager.model_config
    cp = cp_size_of(server_args)
    if override:
        longest, source = override, "SGLANG_CP_SYMM_WARMUP_TOKENS"
    else:
        chunk = resolved_arg(server_args, "chunked_prefill_size")
        longest = warmup_prompt_tokens(chunk, resolved_arg(server_args, "page_size", 1),
                                       getattr(tokenizer_manager, "max_req_input_len", None),
                                       getattr(model_config, "context_len", None))
        source = (f"chunked_prefill_size {chunk}" if chunk and chunk > 0
                  else "the longest prompt (chunked prefill off)")
    shape = _model_shape(tokenizer_manager, server_args, cp)
    short = small_pool_tokens(shape, cp, longest) if shape is not None else []
    return WarmupPlan([longest] + short, dp_ranks_of(server_args), cp, _route_field(request_class),
                      int(model_config.vocab_size), source)


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


async def _drain(tokenizer_manager: Any, request: Any) -> None:
    """Run one request to its end; an abort the tokenizer manager yields instead of raising is a failure too."""
    last = None
    async for last in tokenizer_manager.generate_request(request, None):
        pass
    reason = ((last or {}).get("meta_info") or {}).get("finish_reason") if isinstance(last, dict) else None
    if isinstance(reason, dict) and reason.get("type") == "abort":
        raise RuntimeError(f"the server aborted the request: {reason.get('message', reason)}")


async def _rank_sequence(tokenizer_manager: Any, request_class: Any, plan: WarmupPlan, dp_rank: int,
                         disaggregation_mode: str, bootstrap_host: Optional[str]) -> None:
    rng = random.Random()  # fresh ids every time: a radix-cache hit would shorten the prefill
    for i, length in enumerate(plan.prompts):
        rid = f"{RID_PREFIX}{dp_rank}-{i}-{rng.getrandbits(32):08x}"
        await _drain(tokenizer_manager, _request(request_class, plan, length, rid, dp_rank, rng,
                                                 disaggregation_mode, bootstrap_host))


def failure_message(plan: Optional[WarmupPlan], exc: BaseException) -> str:
    what = f"{plan.tokens}-token prefill on {plan.dp_size} DP rank(s)" if plan else "the warm-up"
    return (f"sglang-cp-symm: the CP warm-up ({what}) failed: {type(exc).__name__}: {exc}. The server starts "
            "anyway; the first long requests will grow the symmetric pool at run time (an ncclMemAlloc plus a "
            "collective window registration per new segment, about 2 ms each on one H100, and a hang if ranks "
            "grow unevenly). Lower SGLANG_CP_SYMM_WARMUP_TOKENS or free memory; SGLANG_CP_SYMM_WARMUP=0 turns "
            "the warm-up off.")


def skip_reason(settings: Any, server_args: Any, tokenizer_manager: Any, disaggregation_mode: str) -> Optional[str]:
    if not settings.enabled:
        return "the plugin is off"
    if not settings.warmup:
        return "SGLANG_CP_SYMM_WARMUP is off"
    if not resolved_arg(server_args, "enable_symm_mem", False):
        return "--enable-symm-mem is off: there is no symmetric pool to fill"
    if disaggregation_mode == "decode":
        return "a PD decode server runs no prefill"
    if not getattr(tokenizer_manager, "is_generation", True):
        return "the model is not a generation model"
    if cp_size_of(server_args) <= 1:
        return "attention context parallelism is off (attn_cp_size 1): no CP all-gather to warm"
    return None


async def run_warmup(disaggregation_mode: str, tokenizer_manager: Any) -> dict:
    """The named warm-up ``cp_symm_max_tokens`` (sglang calls it as ``fn(disaggregation_mode, tokenizer_manager)``).

    Runs once per process; later calls return the first result. Never raises unless
    strict mode is on; what it did is returned and kept in ``STATE.result``.
    """
    if STATE.done:
        return STATE.result
    settings = switches.current()
    result = {"ran": False, "prompts": None, "dp_size": None, "seconds": None, "error": None, "skipped": None}
    server_args = tokenizer_manager.server_args
    reason = skip_reason(settings, server_args, tokenizer_manager, disaggregation_mode)
    if reason:
        result["skipped"] = reason
        if settings.enabled:
            logger.info("sglang-cp-symm: warm-up skipped: %s", reason)
        return _keep(result)
    from sglang.srt.managers.io_struct import GenerateReqInput

    try:
        from sglang.srt.disaggregation.utils import FAKE_BOOTSTRAP_HOST
    except ImportError:
        FAKE_BOOTSTRAP_HOST = None
    plan = None
    started = time.monotonic()
    try:
        plan = plan_for(tokenizer_manager, GenerateReqInput, settings.warmup_tokens)
        result.update(prompts=plan.prompts, dp_size=plan.dp_size)
        logger.info("sglang-cp-symm: warm-up: prompts of %s tokens (the first from %s) on each of %d DP rank(s)",
                    ", ".join(map(str, plan.prompts)), plan.source, plan.dp_size)
        await asyncio.gather(*(_rank_sequence(tokenizer_manager, GenerateReqInput, plan, r, disaggregation_mode,
                                              FAKE_BOOTSTRAP_HOST) for r in range(plan.dp_size)))
        result.update(ran=True, seconds=round(time.monotonic() - started, 3))
        logger.info("sglang-cp-symm: warm-up done in %.2f s; each rank logs its pool line", result["seconds"])
    except Exception as exc:
        result.update(error=f"{type(exc).__name__}: {exc}", seconds=round(time.monotonic() - started, 3))
        message = failure_message(plan, exc)
        await _send_markers(tokenizer_manager, GenerateReqInput, plan, disaggregation_mode, FAKE_BOOTSTRAP_HOST)
        _keep(result)
        if settings.strict:
            raise WarmupFailed(f"sglang-cp-symm strict mode: {message}") from exc
        logger.warning(message)
        return result
    await _send_markers(tokenizer_manager, GenerateReqInput, plan, disaggregation_mode, FAKE_BOOTSTRAP_HOST)
    return _keep(result)


async def _send_markers(tokenizer_manager, request_class, plan, disaggregation_mode, bootstrap_host) -> None:
    """One one-token request per DP rank: each rank closes its warm-up phase and logs its line on receipt."""
    if plan is None:
        return
    rng = random.Random()
    markers = [_request(request_class, plan, 1, f"{DONE_PREFIX}{r}-{rng.getrandbits(32):08x}", r, rng,
                        disaggregation_mode, bootstrap_host) for r in range(plan.dp_size)]
    try:
        await asyncio.gather(*(_drain(tokenizer_manager, m) for m in markers))
    except Exception as exc:  # the ranks then open their serving phase on the first real request
        logger.info("sglang-cp-symm: warm-up completion marker failed (%s); ranks report on first traffic", exc)


def _keep(result: dict) -> dict:
    STATE.result = dict(result)
    return result


def is_warmup_request(obj: Any) -> bool:
    rid = getattr(obj, "rid", None)
    return isinstance(rid, str) and rid.startswith(RID_PREFIX)


async def ensure_warmed(tokenizer_manager: Any) -> dict:
    """Run the warm-up once in this process before the request that called this goes on.

    Concurrent first requests all wait for the same warm-up; the warm-up's own
    requests never wait (the caller checks ``is_warmup_request``).
    """
    if STATE.done:
        return STATE.result
    if STATE.task is None:
        mode = resolved_arg(tokenizer_manager.server_args, "disaggregation_mode", "null")
        STATE.task = asyncio.ensure_future(run_warmup(mode, tokenizer_manager))
    return await asyncio.shield(STATE.task)


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


def observe_request(scheduler: Any, request: Any) -> Optional[str]:
    """One request arrived at this rank's scheduler; returns the warm-up line when this closed the warm-up."""
    if not is_warmup_request(request):
        WATCHDOG.traffic()
        if WATCHDOG.measuring:
            WATCHDOG.between_requests()
        return None
    WATCHDOG.rank = rank_name(scheduler)
    WATCHDOG.rank_info = {k: getattr(scheduler, k, None) for k in ("tp_rank", "dp_rank", "pp_rank")}
    if request.rid.startswith(DONE_PREFIX):
        line = WATCHDOG.finish_warmup()
        if line is not None:
            logger.info(line)
            write_rank_record()
        return line
    WATCHDOG.begin_warmup(len(getattr(request, "input_ids", None) or ()))
    return None
