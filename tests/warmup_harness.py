"""Runs inside a fresh interpreter of one real sglang release (tests/test_warmup.py): real server arguments,
the real model config, sglang's own named warm-up runner and request class, and a tokenizer manager stand-in.

Why a stand-in for the tokenizer manager: sglang's ``TokenizerManager`` module imports
``sgl_kernel``, a CUDA-only package, so it cannot be imported on this machine. The
stand-in has what the warm-up uses of it (``server_args``, ``model_config``,
``max_req_input_len``, ``is_generation``, ``generate_request``) and records every
request; it answers like the real one (one final output with ``meta_info``), or
fails the way the real one does (raises, or yields an ``abort`` finish reason).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from types import SimpleNamespace

MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "qwen3-30b-a3b")


def server_args(release_args: dict):
    """Real ``ServerArgs`` on the CPU for the Qwen3-30B-A3B config in tests/models, resolved as the server does."""
    from sglang.srt.server_args import ServerArgs

    args = ServerArgs(model_path=MODEL_DIR, device="cpu", skip_tokenizer_init=True, **release_args)
    if hasattr(args, "resolve_once"):  # 0.5.23 resolves in a pipeline, which Engine and the server run
        args.resolve_once()
    return args


class AsOnCuda:
    """The real server arguments, with ``enable_symm_mem`` as asked: on a machine without CUDA sglang turns
    symmetric memory off while resolving (0.5.23 says so and makes the record read-only), which a CUDA
    server would not."""

    def __init__(self, args, enable_symm_mem=True):
        self._args, self._symm = args, enable_symm_mem

    def __getattr__(self, name):
        return self._symm if name == "enable_symm_mem" else getattr(self._args, name)

    def resolved_dict(self):
        values = dict(self._args.resolved_dict()) if hasattr(self._args, "resolved_dict") else {}
        values["enable_symm_mem"] = self._symm
        return values


class RecordingTokenizerManager:
    def __init__(self, args, fail_at_tokens=None, abort_at_tokens=None, enable_symm_mem=True):
        from sglang.srt.configs.model_config import ModelConfig

        self.server_args = AsOnCuda(args, enable_symm_mem)
        self.model_config = ModelConfig.from_server_args(args)
        # What tp_worker.py computes with a KV pool larger than the context: min(ctx - 1, pool - 1) - 5.
        self.max_req_input_len = self.model_config.context_len - 1 - 5
        self.is_generation = True
        self.requests = []
        self.fail_at_tokens, self.abort_at_tokens = fail_at_tokens, abort_at_tokens

    async def generate_request(self, obj, request=None):
        self.requests.append(obj)
        n = len(obj.input_ids)
        if n == self.fail_at_tokens:
            raise ValueError(f"The input ({n} tokens) is longer than the model's context length")
        reason = {"type": "length", "length": 1}
        if n == self.abort_at_tokens:
            reason = {"type": "abort", "message": "out of memory", "status_code": 500}
        await asyncio.sleep(0)
        yield {"text": "", "meta_info": {"id": obj.rid, "finish_reason": reason}}

    def summary(self):
        field = next((f for f in ("routed_dp_rank", "data_parallel_rank") if hasattr(self.requests[0], f)), None)
        return [{"tokens": len(r.input_ids), "rid": r.rid, "dp": getattr(r, field) if field else None,
                 "max_new_tokens": r.sampling_params.get("max_new_tokens"),
                 "ids_in_vocab": all(0 <= i < self.model_config.vocab_size for i in r.input_ids),
                 "first_ids": list(r.input_ids[:4])} for r in self.requests]


def run_named_warmup(manager, mode="null"):
    """sglang's own runner, as the HTTP server's lifespan calls it."""
    from sglang.srt.entrypoints.warmup import execute_warmups

    asyncio.run(execute_warmups(mode, ["cp_symm_max_tokens"], manager))


def emit(obj):
    print(json.dumps(obj, default=str))
    sys.stdout.flush()


def activate():
    import sglang_cp_symm.plugin as plugin

    assert plugin.activate(), "the plugin did not turn on"
    return SimpleNamespace(plugin=plugin)
