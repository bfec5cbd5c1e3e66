"""Runs inside a fresh interpreter of one real sglang release (tests/engine/test_warmup*.py,
tests/engine/test_longest_forward.py): real server arguments for the model config in tests/models, and the plugin's
CPU rehearsal of the warm-up (sglang_cp_symm.tools.warmup_rehearsal, whose docstring says what is real and what
stands in for the CUDA-only tokenizer manager)."""

from __future__ import annotations

import inspect
import json
import os
import sys

from sglang_cp_symm.tools.warmup_rehearsal import (  # noqa: F401
    AsOnCuda,
    RecordingTokenizerManager,
    ReleaseScheduler,
    run_named_warmup,
)

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
