"""Model presets for the command line: the shapes of models whose CP prefill sglang documents, and reading a
``config.json`` named on the command line (the running warm-up reads the served model's config instead).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

from ..engine.allocator_model import ModelShape, shape_from_config
from ..engine.scheduler_rules import SizingError


#: Shapes of models whose CP prefill sglang documents, from their published config.json.
PRESETS = MappingProxyType({
    # deepseek-ai/DeepSeek-V3.2-Exp: hidden 7168, kv_lora_rank 512, qk_rope_head_dim 64, index_head_dim 128.
    "deepseek-v3.2": MappingProxyType({"hidden_size": 7168, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
                                       "index_head_dim": 128, "num_attention_heads": 128}),
    # Qwen/Qwen3-30B-A3B: hidden 2048, 4 KV heads of 128, context 40960.
    "qwen3-30b-a3b": MappingProxyType({"hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 4,
                                       "head_dim": 128, "max_position_embeddings": 40960}),
    # Qwen/Qwen3-235B-A22B: hidden 4096, 4 KV heads of 128, context 40960.
    "qwen3-235b-a22b": MappingProxyType({"hidden_size": 4096, "num_attention_heads": 64, "num_key_value_heads": 4,
                                         "head_dim": 128, "max_position_embeddings": 40960}),
})


def load_config(model: str) -> dict:
    """A preset's config, or a ``config.json`` (a path, or a model folder holding one)."""
    if model in PRESETS:
        return dict(PRESETS[model])
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise SizingError(f"--model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a config.json "
                          "or a folder holding one")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SizingError(f"{path}: not a readable JSON file ({exc})") from None


def load_shape(model: str, kv_dtype: str = "bf16", attn_tp_size: int = 1) -> ModelShape:
    """A preset name, a ``config.json`` path, or a model folder holding one."""
    return shape_from_config(load_config(model), kv_dtype, attn_tp_size, str(model))
