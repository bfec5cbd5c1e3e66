"""The warm-up rehearsed without a GPU: what the plugin will send, from a real sglang command line.

Real: the release's own argument parser (``prepare_server_args``), its resolved
``ServerArgs`` and ``ModelConfig`` (read from the model folder's ``config.json``), its
named warm-up registry and runner (``execute_warmups``, what the HTTP server's
lifespan calls) and its ``GenerateReqInput``; the plugin as its entry point installs it;
and, where asked (``ReleaseScheduler``), the release's own scheduling decision for
each request: ``validate_input_length`` and ``PrefillAdder`` over its real KV
allocator and a disabled tree cache, on an idle rank.
Stood in: the tokenizer manager, whose module imports the CUDA-only ``sgl_kernel``,
and the transport to the schedulers. ``RecordingTokenizerManager`` has what the
warm-up uses of it (``generate_request``, ``abort_request``, ``get_internal_state``)
and records each request; it answers as the real one does (one final output with a
finish reason). The failures a real one can show (it raises, yields an ``abort``
finish reason, leaves a request in the queue until it is aborted, or never answers at
all: a rank that is gone) are the tests' (``tests/engine/warmup_harness.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
from array import array
from typing import Any, Dict, List, Optional

from ..engine.warmup import DONE_PREFIX, WARMUP_NAME

#: The KV pool of a rank when the server arguments set none (``--max-total-tokens``): far above any context here,
#: as the memory profile of a large GPU gives.
PROFILED_POOL_TOKENS = 1 << 20


def resolved(args: Any, name: str, default: Any = None) -> Any:
    """A resolved server argument (``resolved_dict()`` from 0.5.19, the field before). Not the warm-up's own
    reader (``warmup.resolved_arg``) on purpose: ``ReleaseScheduler`` is what the warm-up's plan is checked against
    (tests/engine/test_longest_forward.py), so it reads the arguments on its own, and strictly (an error in
    ``resolved_dict()`` raises here)."""
    values = args.resolved_dict() if hasattr(args, "resolved_dict") else {}
    value = values.get(name) if name in values else getattr(args, name, None)
    return default if value is None else value


def pool_tokens_of(args: Any) -> int:
    """One DP rank's KV pool in tokens: ``--max-total-tokens`` (else ``PROFILED_POOL_TOKENS``), in whole pages, as
    the pool configurator rounds it (``pool_configurator.py`` 0.5.11 lines 174-180)."""
    page = int(resolved(args, "page_size", 1) or 1)
    wanted = resolved(args, "max_total_tokens", None) or PROFILED_POOL_TOKENS
    return int(wanted) // page * page


@dataclasses.dataclass
class Schedule:
    """What one rank's scheduler does with one prompt on an idle server."""

    tokens: int
    accepted: bool  # validate_input_length passed
    admitted: bool  # add_one_req put it in the batch (else it waits in the queue: NO_TOKEN)
    extends: List[int]  # the extend of each forward, in order
    result: str  # add_one_req's AddReqResult name, or the validation error
    error: Optional[str] = None

    @property
    def largest(self) -> int:
        return max(self.extends, default=0)


class ReleaseScheduler:
    """One DP rank's scheduling of one request, by the release's own code, on the CPU.

    As ``Scheduler.handle_generate_request`` then ``get_new_batch_prefill`` do it:
    ``validate_input_length(req, max_req_input_len, allow_auto_truncate)``, then a fresh
    ``PrefillAdder(page_size, tree_cache, allocator, running_batch=None, new_token_ratio,
    max_prefill_tokens, chunked_prefill_size, 0, 0)`` per forward: ``add_one_req`` for the
    first, ``add_chunked_req`` for each further chunk, the extended tokens becoming the
    prefix in between (what caching the unfinished request does). The allocator is the
    release's real ``TokenToKVPoolAllocator`` / ``PagedTokenToKVPoolAllocator`` of the
    rank's pool size, the tree cache its ``ChunkCache`` (``RadixCache(disable=True)`` on
    0.5.22+, which have no chunk cache), the request a real ``Req``. The nine positional
    arguments of ``PrefillAdder`` are the same in every release (only keyword tails
    were added); a release with a request-type change is handled where it shows
    (``array('q')`` ids from 0.5.13, ``extend_range`` 0.5.14-0.5.22, ``extend_len`` and
    ``prefix_len`` on 0.5.23). What one process without parallel groups lacks is the
    rank's parallel state, which 0.5.17-0.5.18's ``PrefillAdder.__init__`` reads
    (``get_parallel().attn_cp_size``, only to tell a DSA in-sequence CP split): it is
    given from the server arguments through sglang's own ``get_parallel().override``.
    """

    def __init__(self, args: Any, pool_tokens: int, max_req_input_len: int) -> None:
        import torch
        from sglang.srt import server_args as sa
        from sglang.srt.managers import schedule_policy
        from sglang.srt.managers.schedule_batch import Req
        from sglang.srt.managers.utils import validate_input_length
        from sglang.srt.sampling.sampling_params import SamplingParams

        self.torch, self.sp, self.Req, self.SamplingParams = torch, schedule_policy, Req, SamplingParams
        self.validate = validate_input_length
        chunk = resolved(args, "chunked_prefill_size", -1)
        self.chunk = int(chunk) if chunk and int(chunk) > 0 else None
        self.page = int(resolved(args, "page_size", 1) or 1)
        self.max_prefill = int(resolved(args, "max_prefill_tokens", 16384))
        self.pool, self.max_req_input_len = int(pool_tokens), int(max_req_input_len)
        self.cp = int(resolved(args, "attn_cp_size", 1) or 1)
        setter = getattr(sa, "set_global_server_args_for_scheduler", None)
        if setter is not None:  # 0.5.23's PrefillAdder reads the published configuration
            setter(args)

    def _parallel_state(self):
        """The rank's attention-CP size where sglang reads it from its parallel state (0.5.17+)."""
        try:
            from sglang.srt.runtime_context import get_parallel

            return get_parallel().override(attn_cp_size=self.cp)
        except Exception:  # no runtime context (before 0.5.17), or no override for that field
            return contextlib.nullcontext()

    def _allocator(self):
        try:
            from sglang.srt.mem_cache.allocator import PagedTokenToKVPoolAllocator, TokenToKVPoolAllocator
        except ImportError:  # 0.5.21+: a package
            from sglang.srt.mem_cache.allocator.paged import PagedTokenToKVPoolAllocator
            from sglang.srt.mem_cache.allocator.token import TokenToKVPoolAllocator
        if self.page == 1:
            return TokenToKVPoolAllocator(self.pool, self.torch.int64, "cpu", None, False)
        return PagedTokenToKVPoolAllocator(self.pool, self.page, self.torch.int64, "cpu", None, False)

    def _tree_cache(self, allocator):
        from sglang.srt.mem_cache.cache_init_params import CacheInitParams

        params = {}
        for name, parameter in inspect.signature(CacheInitParams).parameters.items():
            if name == "disable":
                params[name] = True
            elif name == "token_to_kv_pool_allocator":
                params[name] = allocator
            elif name == "page_size":
                params[name] = self.page
            elif parameter.default is inspect.Parameter.empty:
                params[name] = None
        try:
            from sglang.srt.mem_cache.chunk_cache import ChunkCache
        except ImportError:
            from sglang.srt.mem_cache.radix_cache import RadixCache

            return RadixCache(CacheInitParams(**params))
        return ChunkCache(CacheInitParams(**params))

    def _request(self, tokens: int):
        ids = list(range(1, tokens + 1))
        extra = {"vocab_size": 32000} if "vocab_size" in inspect.signature(self.Req.__init__).parameters else {}
        req = self.Req(f"rehearsal-{tokens}", "", ids, self.SamplingParams(max_new_tokens=1), **extra)
        if isinstance(getattr(req, "output_ids", None), array) and not isinstance(req.origin_input_ids, array):
            req.origin_input_ids = array("q", ids)  # 0.5.13+ keep token ids in arrays
        return req

    @staticmethod
    def _extend(req) -> int:
        if "extend_len" in type(req).__dict__:  # 0.5.23: a property, extend_end - prefix_len
            return int(req.extend_len)
        extend_range = getattr(req, "extend_range", None)  # 0.5.14-0.5.22
        return int(extend_range.length) if extend_range is not None else int(req.extend_input_len)

    def _commit(self, req, extended: int) -> bool:
        """The forward ran: its tokens become the request's prefix. True once the whole prompt is in."""
        torch = self.torch
        if "prefix_len" in vars(req):  # 0.5.23: a plain count; the prefix's KV lives elsewhere
            req.prefix_len = int(req.prefix_len) + extended
            done = req.prefix_len
        else:
            before = req.prefix_indices
            count = len(before)
            req.prefix_indices = torch.arange(1, count + extended + 1, dtype=torch.int64)
            done = count + extended
        return done >= len(req.origin_input_ids)

    def schedule(self, tokens: int, max_forwards: int = 4096) -> Schedule:
        with self._parallel_state():
            return self._schedule(tokens, max_forwards)

    def _schedule(self, tokens: int, max_forwards: int) -> Schedule:
        req = self._request(tokens)
        error = self.validate(req, self.max_req_input_len, False)
        if error:
            return Schedule(tokens, False, False, [], "refused", str(error))
        allocator = self._allocator()
        tree = self._tree_cache(allocator)
        adder = self.sp.PrefillAdder(self.page, tree, allocator, None, 1.0, self.max_prefill, self.chunk, 0, 0)
        req.init_next_round_input(tree)
        result = adder.add_one_req(req, has_chunked_req=False, truncation_align_size=None)
        if req not in adder.can_run_list:
            return Schedule(tokens, True, False, [], result.name)
        extends = [self._extend(req)]
        chunked = adder.new_chunked_req
        while chunked is not None and not self._commit(req, extends[-1]) and len(extends) < max_forwards:
            adder = self.sp.PrefillAdder(self.page, tree, allocator, None, 1.0, self.max_prefill, self.chunk, 0, 0)
            req.init_next_round_input()
            chunked = adder.add_chunked_req(req)
            extends.append(self._extend(req))
        return Schedule(tokens, True, True, extends, result.name)

    def longest_admitted(self) -> int:
        """The longest prompt this rank both accepts and admits (0: none), by bisection over ``schedule``."""
        low, high = 0, self.max_req_input_len  # a prompt of max_req_input_len tokens is always refused
        while high - low > 1:
            middle = (low + high) // 2
            if self.schedule(middle, max_forwards=1).admitted:
                low = middle
            else:
                high = middle
        return low

    def largest_forward(self) -> int:
        """The largest forward this rank would run for one request: that of its longest admitted prompt."""
        longest = self.longest_admitted()
        return self.schedule(longest).largest if longest else 0


class AsOnCuda:
    """Server arguments with ``enable_symm_mem`` as asked: without CUDA, sglang turns symmetric memory off while
    it resolves the arguments (0.5.23 then makes them read-only), which a CUDA server would not."""

    def __init__(self, args: Any, enable_symm_mem: bool = True) -> None:
        self._args, self._symm = args, enable_symm_mem

    def __getattr__(self, name: str) -> Any:
        return self._symm if name == "enable_symm_mem" else getattr(self._args, name)

    def resolved_dict(self) -> dict:
        values = dict(self._args.resolved_dict()) if hasattr(self._args, "resolved_dict") else {}
        values["enable_symm_mem"] = self._symm
        return values


class RecordingTokenizerManager:
    """What the warm-up uses of sglang's ``TokenizerManager``, answering as a healthy server does.

    - ``pool_tokens``: each DP rank's KV pool (default ``pool_tokens_of(args)``), which
      ``get_internal_state`` reports as sglang's schedulers do (``memory_usage.token_capacity``)
      and from which ``max_req_input_len`` follows (``min(ctx - 1, pool - 1) - 5``, tp_worker.py).
    - ``scheduler=True``: each request is decided by the release's own scheduling code
      (``ReleaseScheduler``): a refused prompt fails as sglang's tokenizer manager raises it
      (``ValueError``, the BAD_REQUEST abort of ``_wait_one_response``), one the KV admission
      does not admit waits in the queue until it is aborted, and then ends with an abort finish, as
      sglang answers the abort of a queued request (``Scheduler.abort_request``: ``send_output(AbortReq)``).
    Every request is recorded (``requests``), every abort (``aborted``), every request whose generator was
    cancelled (``cancelled``); ``inflight`` holds the requests not yet answered. The failures a real server
    can show are the tests' (``tests/engine/warmup_harness.py``), which override ``_answer``.
    """

    def __init__(self, args: Any, pool_tokens: Optional[int] = None, scheduler: bool = False,
                 enable_symm_mem: bool = True) -> None:
        from sglang.srt.configs.model_config import ModelConfig

        from ..engine.scheduler_rules import max_req_input_len_of
        from ..engine.warmup import dp_ranks_of

        self.server_args = AsOnCuda(args, enable_symm_mem)
        self.model_config = ModelConfig.from_server_args(args)
        self.pool_tokens = pool_tokens_of(args) if pool_tokens is None else pool_tokens
        self.max_req_input_len = max_req_input_len_of(self.model_config.context_len, self.pool_tokens)
        self.dp_ranks = dp_ranks_of(self.server_args)
        self.is_generation = True
        self.requests: List[Any] = []
        self.aborted: List[str] = []
        self.cancelled: List[str] = []
        self.inflight: Dict[str, asyncio.Event] = {}
        self.scheduler = (ReleaseScheduler(args, self.pool_tokens, self.max_req_input_len) if scheduler else None)
        self.schedules: List[Schedule] = []

    def _rank_of(self, obj: Any) -> int:
        value = next((getattr(obj, f) for f in ("routed_dp_rank", "data_parallel_rank") if hasattr(obj, f)), None)
        return int(value or 0)

    async def get_internal_state(self) -> List[dict]:
        return [{"memory_usage": {"token_capacity": self.pool_tokens}} for _ in range(self.dp_ranks)]

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        self.aborted.append(rid)
        event = self.inflight.get(rid)
        if event is not None:
            event.set()

    async def generate_request(self, obj: Any, request: Any = None):
        self.requests.append(obj)
        aborted = self.inflight[obj.rid] = asyncio.Event()
        try:
            reason = await self._answer(obj, aborted)
            await asyncio.sleep(0)
            yield {"text": "", "meta_info": {"id": obj.rid, "finish_reason": reason}}
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.append(obj.rid)  # sglang would keep this request's state until its scheduler answers
            raise
        finally:
            self.inflight.pop(obj.rid, None)

    async def _answer(self, obj: Any, aborted: asyncio.Event) -> dict:
        """The request's finish reason, once it is answered: the scheduler's decision where there is one (the
        completion markers are not scheduled: one token each), an abort finish where it was aborted."""
        if self.scheduler is not None and not obj.rid.startswith(DONE_PREFIX):
            schedule = self.scheduler.schedule(len(obj.input_ids))
            self.schedules.append(schedule)
            if not schedule.accepted:
                raise ValueError(schedule.error)
            if not schedule.admitted:  # NO_TOKEN: it stays in the waiting queue until aborted
                await aborted.wait()
        if aborted.is_set():
            return {"type": "abort", "message": "Abort in waiting queue"}
        return {"type": "length", "length": 1}

    def summary(self) -> List[dict]:
        field = next((f for f in ("routed_dp_rank", "data_parallel_rank") if hasattr(self.requests[0], f)), None)
        return [{"tokens": len(r.input_ids), "rid": r.rid, "dp": getattr(r, field) if field else None,
                 "max_new_tokens": r.sampling_params.get("max_new_tokens"),
                 "ids_in_vocab": all(0 <= i < self.model_config.vocab_size for i in r.input_ids),
                 "first_ids": list(r.input_ids[:4])} for r in self.requests]


def run_named_warmup(manager: Any, mode: str = "null") -> None:
    """sglang's own runner, as the HTTP server's lifespan calls it."""
    from sglang.srt.entrypoints.warmup import execute_warmups

    asyncio.run(execute_warmups(mode, [WARMUP_NAME], manager))


def demo_settings():
    """The switches ``demo-warmup`` runs with, whatever the environment says: the plugin on, every other switch at
    the default an empty environment gives (warm-up and watchdog on, automatic sizing and deadline, not strict)."""
    from ..engine.settings import read_settings

    return dataclasses.replace(read_settings({}), enabled=True)


def run_demo(argv: List[str]) -> int:
    """``sglang-cp-symm demo-warmup -- <sglang serve arguments>``: parse them as sglang does, run its named
    warm-ups with the plugin on, and print the plan, what each DP rank would be sent, and what the release's own
    scheduler does with the longest prompt.

    The command owns its settings (``demo_settings``; the command line set the user's aside). Exit 0 when the
    warm-up ran; 1 when it did not, or when the release's modules do not import here (one line says which); 2
    for arguments sglang refuses (its own parser's message).
    """
    from .. import patch
    from ..releases import installed_sglang

    if not argv:
        print("give the arguments of sglang serve after --, e.g. sglang-cp-symm demo-warmup -- --model-path DIR "
              "--device cpu --attn-cp-size 2 --enable-symm-mem")
        return 2
    if installed_sglang() is None:
        print("sglang is not installed in this environment: nothing to rehearse")
        return 1
    try:
        patch(demo_settings())
        return _rehearse(argv)
    except ImportError as exc:  # 0.5.8-0.5.10 reach the CUDA-only sgl_kernel from io_struct; a partial install
        print(f"sglang's warm-up modules do not import here ({type(exc).__name__}: {str(exc)[:200]}); "
              "run this where sglang's own server starts")
        return 1
    except Exception as exc:  # noqa: BLE001 - sglang refused the arguments or the model: one line, no traceback
        print(f"the warm-up could not be rehearsed for these arguments ({type(exc).__name__}: {str(exc)[:200]})")
        return 1


def _rehearse(argv: List[str]) -> int:
    from sglang.srt.server_args import prepare_server_args

    from ..engine.activation import plugin
    from ..engine.warmup import status_words

    args = prepare_server_args(list(argv))
    if hasattr(args, "resolve_once"):
        args.resolve_once()
    print(f"warm-ups on the command line as sglang parsed it: {args.warmups}")
    try:
        manager = RecordingTokenizerManager(args, scheduler=True)
    except ImportError as exc:  # 0.5.8-0.5.10 reach the CUDA-only sgl_kernel from the scheduling modules
        print(f"this release's scheduler does not import here ({exc}); requests answered without it")
        manager = RecordingTokenizerManager(args)
    run_named_warmup(manager)
    applied = plugin()
    result = applied.warmup.result
    print(f"status line's warm-up part: warm-up {status_words(applied.settings, result)}")
    if result.get("skipped"):
        return 0
    by_rank: dict = {}
    for request in manager.summary():
        by_rank.setdefault(request["dp"], []).append(request)
    for rank, requests in sorted(by_rank.items(), key=lambda item: str(item[0])):
        lengths = ", ".join(str(r["tokens"]) for r in requests)
        ok = all(r["max_new_tokens"] == 1 and r["ids_in_vocab"] for r in requests)
        print(f"DP rank {rank if rank is not None else 0}: prompts of {lengths} tokens (the last one closes the "
              f"rank's warm-up); max_new_tokens=1 and random ids in the vocabulary: {'yes' if ok else 'NO'}")
    if manager.scheduler is not None and manager.schedules:
        first = manager.schedules[0]
        print(f"the release's own scheduler (PrefillAdder, pool {manager.pool_tokens} tokens per DP rank) on the "
              f"{first.tokens}-token prompt: {'admitted' if first.admitted else 'NOT admitted: ' + first.result}, "
              f"forwards of {', '.join(map(str, first.extends)) or '-'} tokens; its largest forward for any one "
              f"request: {manager.scheduler.largest_forward()} tokens")
    print(f"result: {result}")
    return 0 if result.get("ran") else 1
