"""Runs inside a fresh interpreter of one real sglang release (tests/test_warmup.py): real server arguments for
the model config in tests/models, and the plugin's CPU rehearsal of the warm-up (sglang_cp_symm.tools.warmup_rehearsal,
whose docstring says what is real and what stands in for the CUDA-only tokenizer manager)."""

from __future__ import annotations

import json
import os
import sys

from sglang_cp_symm.tools.warmup_rehearsal import AsOnCuda, RecordingTokenizerManager, run_named_warmup  # noqa: F401

MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "qwen3-30b-a3b")


def server_args(release_args: dict):
    """Real ``ServerArgs`` on the CPU, resolved as the server resolves them."""
    from sglang.srt.server_args import ServerArgs

    args = ServerArgs(model_path=MODEL_DIR, device="cpu", skip_tokenizer_init=True, **release_args)
    if hasattr(args, "resolve_once"):  # 0.5.23 resolves in a pipeline, which Engine and the server run
        args.resolve_once()
    return args


def emit(obj):
    print(json.dumps(obj, default=str))
    sys.stdout.flush()


def activate():
    import sglang_cp_symm.engine.plugin as plugin

    assert plugin.activate(), "the plugin did not turn on"
