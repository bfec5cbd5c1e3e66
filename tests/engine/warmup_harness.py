"""Runs inside a fresh interpreter of one real sglang release (tests/engine/test_warmup*.py,
tests/engine/test_longest_forward.py): real server arguments for the model config in tests/models, and the plugin's
CPU rehearsal of the warm-up (sglang_cp_symm.tools.warmup_rehearsal, whose docstring says what is real and what
stands in for the CUDA-only tokenizer manager), with the failures a real server can show."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
from typing import Optional

from sglang_cp_symm.engine.warmup import DONE_PREFIX
from sglang_cp_symm.tools import warmup_rehearsal
from sglang_cp_symm.tools.warmup_rehearsal import AsOnCuda, ReleaseScheduler, run_named_warmup  # noqa: F401

class RecordingTokenizerManager(warmup_rehearsal.RecordingTokenizerManager):
    """The plugin's stand-in tokenizer manager (a healthy server), with the failures a real one can show:

    - ``latency_s``: how long each request takes (an abort ends it at once);
    - ``fail_at_tokens`` / ``abort_at_tokens``: a prompt of that length raises / ends with an abort;
    - ``fail_rank``: that DP rank's first prompt raises after half its latency (a failure on one rank);
    - ``stall_rank``: that rank's requests wait until aborted, then end with an abort finish, as sglang
      answers the abort of a queued request (``Scheduler.abort_request``: ``send_output(AbortReq)``);
    - ``dead_rank``: that rank answers nothing, aborts and ``get_internal_state`` included;
    - ``report_pool=False``: ``get_internal_state`` fails (a tokenizer worker that cannot ask).
    A failure comes before the release's scheduler sees the request (``scheduler=True``).
    """

    def __init__(self, args, fail_at_tokens: Optional[int] = None, abort_at_tokens: Optional[int] = None,
                 report_pool: bool = True, latency_s: float = 0.0, fail_rank: Optional[int] = None,
                 stall_rank: Optional[int] = None, dead_rank: Optional[int] = None, **healthy) -> None:
        super().__init__(args, **healthy)
        self.fail_at_tokens, self.abort_at_tokens = fail_at_tokens, abort_at_tokens
        self.report_pool, self.latency_s = report_pool, latency_s
        self.fail_rank, self.stall_rank, self.dead_rank = fail_rank, stall_rank, dead_rank

    async def get_internal_state(self):
        if not self.report_pool:
            raise RuntimeError("this tokenizer worker cannot reach the schedulers")
        if self.dead_rank is not None:
            await asyncio.Event().wait()  # one rank never answers: the communicator waits for all
        return await super().get_internal_state()

    async def generate_request(self, obj, request=None):  # this class's own: tests wrap it as sglang's hook would
        async for out in super().generate_request(obj, request):
            yield out

    async def _answer(self, obj, aborted):
        n, rank = len(obj.input_ids), self._rank_of(obj)
        if n == self.fail_at_tokens:
            raise ValueError(f"The input ({n} tokens) is longer than the model's context length")
        if rank == self.dead_rank:
            await asyncio.Event().wait()  # never answers, not even the abort
        if rank == self.fail_rank and not obj.rid.startswith(DONE_PREFIX):
            await asyncio.sleep(self.latency_s / 2)
            raise RuntimeError(f"CUDA out of memory on DP rank {rank} (rehearsed)")
        if rank == self.stall_rank:
            await aborted.wait()
        elif self.latency_s:
            try:
                await asyncio.wait_for(aborted.wait(), timeout=self.latency_s)
            except asyncio.TimeoutError:
                pass
        reason = await super()._answer(obj, aborted)
        if n == self.abort_at_tokens and reason["type"] != "abort":
            reason = {"type": "abort", "message": "out of memory", "status_code": 500}
        return reason


MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "qwen3-30b-a3b")


def server_args(release_args: dict):
    """Real ``ServerArgs`` on the CPU, resolved as the server resolves them."""
    from sglang.srt.server_args import ServerArgs

    args = ServerArgs(model_path=MODEL_DIR, device="cpu", skip_tokenizer_init=True, **release_args)
    if hasattr(args, "resolve_once"):  # 0.5.23 resolves in a pipeline, which Engine and the server run
        args.resolve_once()
    return args


def cp_flags() -> dict:
    """Attention CP over 2 ranks (of TP 4) in this release's own flags: ``enable_prefill_cp`` + a strategy
    (0.5.16+), ``enable_prefill_context_parallel`` (0.5.10-0.5.19), ``attn_cp_size`` alone (0.5.9), or NSA prefill
    CP over the attention-TP group (0.5.6-0.5.8, where the plugin's CP size is that group's)."""
    from sglang.srt.server_args import ServerArgs

    names = set(inspect.signature(ServerArgs).parameters)
    if "enable_prefill_cp" in names:
        return dict(attn_cp_size=2, enable_prefill_cp=True, cp_strategy="zigzag")
    if "enable_prefill_context_parallel" in names:
        return dict(attn_cp_size=2, enable_prefill_context_parallel=True)
    if "attn_cp_size" in names:
        return dict(attn_cp_size=2)
    return dict(enable_nsa_prefill_context_parallel=True)


def cp_server_args(**extra):
    """Qwen3-30B-A3B on TP 4 with attention CP, plus ``extra`` (real, resolved ``ServerArgs``)."""
    return server_args(dict(tp_size=4, **cp_flags(), **extra))


def reset_warmup():
    """A fresh warm-up state, as in a new server process (the warm-up runs once per process)."""
    from sglang_cp_symm.engine import activation

    state = activation.plugin().warmup
    state.result, state.done, state.task = {}, False, None


def emit(obj):
    print(json.dumps(obj, default=str))
    sys.stdout.flush()


def activate():
    import sglang_cp_symm.engine.plugin as plugin

    assert plugin.activate(), "the plugin did not turn on"
