"""The warm-up rehearsed without a GPU: what the plugin will send, from a real sglang command line.

Real: the release's own argument parser (``prepare_server_args``), its resolved
``ServerArgs`` and ``ModelConfig`` (read from the model folder's ``config.json``), its
named warm-up registry and runner (``execute_warmups``, what the HTTP server's
lifespan calls) and its ``GenerateReqInput``; the plugin as its entry point installs it.
Stood in: the tokenizer manager, whose module imports the CUDA-only ``sgl_kernel``.
``RecordingTokenizerManager`` has what the warm-up uses of it and records each request;
it answers as the real one does (one final output with a finish reason), or fails
as the real one can (raises, or yields an ``abort`` finish reason).
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional


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
    def __init__(self, args: Any, fail_at_tokens: Optional[int] = None, abort_at_tokens: Optional[int] = None,
                 enable_symm_mem: bool = True) -> None:
        from sglang.srt.configs.model_config import ModelConfig

        self.server_args = AsOnCuda(args, enable_symm_mem)
        self.model_config = ModelConfig.from_server_args(args)
        # What tp_worker.py computes when the KV pool is larger than the context: min(ctx - 1, pool - 1) - 5.
        self.max_req_input_len = self.model_config.context_len - 1 - 5
        self.is_generation = True
        self.requests: List[Any] = []
        self.fail_at_tokens, self.abort_at_tokens = fail_at_tokens, abort_at_tokens

    async def generate_request(self, obj: Any, request: Any = None):
        self.requests.append(obj)
        n = len(obj.input_ids)
        if n == self.fail_at_tokens:
            raise ValueError(f"The input ({n} tokens) is longer than the model's context length")
        reason = {"type": "length", "length": 1}
        if n == self.abort_at_tokens:
            reason = {"type": "abort", "message": "out of memory", "status_code": 500}
        await asyncio.sleep(0)
        yield {"text": "", "meta_info": {"id": obj.rid, "finish_reason": reason}}

    def summary(self) -> List[dict]:
        field = next((f for f in ("routed_dp_rank", "data_parallel_rank") if hasattr(self.requests[0], f)), None)
        return [{"tokens": len(r.input_ids), "rid": r.rid, "dp": getattr(r, field) if field else None,
                 "max_new_tokens": r.sampling_params.get("max_new_tokens"),
                 "ids_in_vocab": all(0 <= i < self.model_config.vocab_size for i in r.input_ids),
                 "first_ids": list(r.input_ids[:4])} for r in self.requests]


def run_named_warmup(manager: Any, mode: str = "null") -> None:
    """sglang's own runner, as the HTTP server's lifespan calls it."""
    from sglang.srt.entrypoints.warmup import execute_warmups

    asyncio.run(execute_warmups(mode, ["cp_symm_max_tokens"], manager))


def run_demo(argv: List[str]) -> int:
    """``sglang-cp-symm demo-warmup -- <sglang serve arguments>``: parse them as sglang does, run its named
    warm-ups with the plugin on, and print what each DP rank would be sent."""
    from ..engine.plugin import activate
    from ..engine.warmup import STATE

    if not activate():
        print("the plugin is off: set SGLANG_CP_SYMM=1")
        return 1
    from sglang.srt.server_args import prepare_server_args

    args = prepare_server_args(list(argv))
    if hasattr(args, "resolve_once"):
        args.resolve_once()
    print(f"warm-ups on the command line as sglang parsed it: {args.warmups}")
    manager = RecordingTokenizerManager(args)
    run_named_warmup(manager)
    result = STATE.result
    if result.get("skipped"):
        print(f"warm-up skipped: {result['skipped']}")
        return 0
    by_rank: dict = {}
    for request in manager.summary():
        by_rank.setdefault(request["dp"], []).append(request)
    for rank, requests in sorted(by_rank.items(), key=lambda item: str(item[0])):
        lengths = ", ".join(str(r["tokens"]) for r in requests)
        ok = all(r["max_new_tokens"] == 1 and r["ids_in_vocab"] for r in requests)
        print(f"DP rank {rank if rank is not None else 0}: prompts of {lengths} tokens (the last one closes the "
              f"rank's warm-up); max_new_tokens=1 and random ids in the vocabulary: {'yes' if ok else 'NO'}")
    print(f"result: {result}")
    return 0 if result.get("ran") else 1
