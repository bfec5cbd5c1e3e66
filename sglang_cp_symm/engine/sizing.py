"""How many tokens one prefill forward can carry, and what its CP all-gathers need, without a server.

The warm-up uses these rules with the running server's resolved arguments and the
doctor with the operator's command-line values, so the two never disagree. The
rules are sglang's own (read in the release wheels; line numbers of 0.5.11 and 0.5.12):

- ``PrefillAdder.add_one_req`` extends a new request whole when its page-rounded
  length fits ``rem_chunk_tokens``, else it cuts the first chunk at
  ``rem_chunk_tokens // page_size * page_size`` (``managers/schedule_policy.py``,
  0.5.11 lines 878 and 893). ``add_chunked_req`` then extends each further chunk by
  exactly ``rem_chunk_tokens`` (0.5.12 line 805), with no page rounding. So the
  largest extend of one forward is ``chunked_prefill_size`` itself, and a prompt
  reaches it in a single forward when ``chunked_prefill_size`` is a multiple of
  ``page_size`` (every default is), else in its second chunk.
- Under DP attention the server divides ``chunked_prefill_size`` by the DP size
  when it resolves its arguments ("The chunked prefill size is adjusted to ...",
  0.5.11 ``server_args.py``), so the resolved value is per DP rank.
- With chunking off (``--chunked-prefill-size -1``) the whole prompt is one
  forward; the scheduler rejects prompts of ``max_req_input_len`` tokens or more
  (``scheduler.py``: ``len(req.origin_input_ids) >= self.max_req_input_len``).
- An attention-CP all-gather returns ``ceil(N / cp) * cp`` rows for N extend
  tokens (``prepare_context_parallel_metadata``: ``max_rank_len = ceil(kv_len /
  cp_size)`` on every rank, ``layers/utils/cp_utils.py``).

And PyTorch's caching allocator, which serves sglang's symmetric ``MemPool``
(``c10/cuda/CUDACachingAllocator.cpp``): a request of at most 1 MiB
(``kSmallSize``) is served from 2 MiB "small" segments (``kSmallBuffer``), a larger
one from "large" segments (20 MiB for requests under 10 MiB, else the request
rounded up to 2 MiB); a free block of one kind never serves the other. One
maximum-length prefill therefore creates large segments only: the first short CP
prefill would still grow the pool, which is why the warm-up also runs the short
lengths of ``small_pool_tokens``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

#: Bytes of sglang's symmetric pre-allocation when ``--enable-symm-mem`` is on and the variable is unset
#: (``server_args.py``: ``envs.SGLANG_SYMM_MEM_PREALLOC_GB_SIZE.set(4)``, 0.5.9 line 1072 onwards).
DEFAULT_PREALLOC_GIB = 4
#: PyTorch's caching allocator: the largest request served from the 2 MiB "small" segments (kSmallSize).
SMALL_ALLOCATION_BYTES = 1 << 20
#: The shortest extend sglang splits across CP ranks: ``can_cp_split`` needs ``seq_len // (2 * cp_size) != 0``.
CP_MIN_TOKENS_PER_RANK = 2


class SizingError(ValueError):
    """Arguments from which no length can be computed (the message says which and why)."""


def per_dp_chunk(chunked_prefill_size: Optional[int], dp_size: int = 1, dp_attention: bool = False) -> int:
    """The resolved ``chunked_prefill_size`` of one DP rank, from the value given on the command line."""
    if chunked_prefill_size is None or chunked_prefill_size <= 0:
        return -1
    return chunked_prefill_size // dp_size if dp_attention and dp_size > 1 else chunked_prefill_size


def attention_tp_size(tp_size: int, attention_dp_size: int = 1, cp_size: int = 1) -> int:
    """Ranks that split one attention layer's heads: the TP group divided by attention DP and attention CP."""
    return max(1, tp_size // max(1, attention_dp_size) // max(1, cp_size))


def longest_prompt(max_req_input_len: Optional[int] = None, context_len: Optional[int] = None) -> Optional[int]:
    """The longest prompt the scheduler accepts, from what the running server knows.

    ``max_req_input_len`` is the scheduler's own bound (a prompt must be shorter);
    without it, ``context_len`` gives the bound sglang derives from it
    (``min(context_len - 1, token pool - 1) - 5``, ``tp_worker.py``), then minus one.
    """
    if max_req_input_len is not None:
        return int(max_req_input_len) - 1
    if context_len is not None:
        return int(context_len) - 7
    return None


def max_extend_tokens(chunked_prefill_size: Optional[int], max_req_input_len: Optional[int] = None,
                      context_len: Optional[int] = None) -> int:
    """The most tokens one prefill forward can extend, from *resolved* server arguments."""
    longest = longest_prompt(max_req_input_len, context_len)
    if longest is not None and longest <= 0:
        raise SizingError(f"the server accepts no prompt at all (max_req_input_len {max_req_input_len}, "
                          f"context length {context_len})")
    if chunked_prefill_size is not None and chunked_prefill_size > 0:
        return chunked_prefill_size if longest is None else min(chunked_prefill_size, longest)
    if longest is None:
        raise SizingError("chunked prefill is off (-1) and no context length is known: pass the context length")
    return longest


def warmup_prompt_tokens(chunked_prefill_size: Optional[int], page_size: Optional[int] = 1,
                         max_req_input_len: Optional[int] = None, context_len: Optional[int] = None) -> int:
    """The prompt length whose prefill contains one forward of ``max_extend_tokens`` tokens.

    When the chunk size is not a multiple of the page size, the first chunk is cut
    short (page-aligned) and the second one carries the full chunk, so the prompt
    is the first chunk plus a full one, if the server accepts that long a prompt.
    """
    longest = longest_prompt(max_req_input_len, context_len)
    most = max_extend_tokens(chunked_prefill_size, max_req_input_len, context_len)
    page = max(1, int(page_size or 1))
    if chunked_prefill_size is None or chunked_prefill_size <= 0 or chunked_prefill_size % page == 0:
        return most
    first_chunk = chunked_prefill_size // page * page
    if first_chunk <= 0:
        raise SizingError(f"chunked_prefill_size {chunked_prefill_size} is smaller than page_size {page}")
    wanted = first_chunk + chunked_prefill_size
    return wanted if longest is None else min(wanted, longest)


def cp_rows(tokens: int, cp_size: int) -> int:
    """Rows of an attention-CP all-gather's output for ``tokens`` tokens: every rank pads to the longest share."""
    if cp_size < 1:
        raise SizingError(f"cp_size must be at least 1, not {cp_size}")
    return math.ceil(tokens / cp_size) * cp_size


@dataclass(frozen=True)
class ModelShape:
    """Bytes per token row of each tensor the model's CP prefill all-gathers.

    ``gathers`` maps a name to bytes per row. Their sum is an upper bound of what
    one layer holds at once (the allocator reuses the memory layer after layer).
    """

    name: str
    gathers: Dict[str, int] = field(default_factory=dict)

    def row_bytes(self) -> int:
        return sum(self.gathers.values())


_DTYPE_BYTES = {"auto": 2, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "half": 2, "fp8": 1,
                "fp8_e4m3": 1, "fp8_e5m2": 1, "fp4_e2m1": 1, "fp32": 4, "float32": 4}


def dtype_bytes(name: str) -> int:
    try:
        return _DTYPE_BYTES[str(name).lower()]
    except KeyError:
        raise SizingError(f"unknown KV dtype {name!r}; known: {', '.join(sorted(_DTYPE_BYTES))}") from None


def shape_from_config(config: dict, kv_dtype: str = "bf16", attn_tp_size: int = 1, name: str = "") -> ModelShape:
    """The gathered rows of a Hugging Face ``config.json``.

    - MLA (``kv_lora_rank``): the latent KV row, ``kv_lora_rank + qk_rope_head_dim`` elements;
      with an NSA indexer (``index_head_dim``, DeepSeek-V3.2) also the indexer key, kept
      in FP8 with one fp32 scale per row.
    - Otherwise (GQA): K and V rows, ``num_key_value_heads / attn_tp`` heads (at least one) of ``head_dim``.
    - Both: the hidden states in bf16 (``hidden_size``), re-ordered by ``cp_all_gather_rerange_output``.
    """
    cfg = config.get("text_config") or config
    try:
        kv = dtype_bytes(kv_dtype)
        hidden = int(cfg["hidden_size"])
        gathers: Dict[str, int] = {}
        if cfg.get("kv_lora_rank"):
            gathers["latent_kv"] = (int(cfg["kv_lora_rank"]) + int(cfg.get("qk_rope_head_dim") or 64)) * kv
            if cfg.get("index_head_dim"):
                gathers["indexer_key"] = int(cfg["index_head_dim"]) + 4
        else:
            heads = int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
            head_dim = int(cfg.get("head_dim") or hidden // int(cfg["num_attention_heads"]))
            per_rank = max(1, heads // max(1, attn_tp_size))
            gathers["k"] = gathers["v"] = per_rank * head_dim * kv
    except (KeyError, TypeError, ValueError) as exc:
        raise SizingError(f"cannot read the attention shape from the model config ({type(exc).__name__}: {exc})") from None
    gathers["hidden_states"] = hidden * 2
    return ModelShape(name or str(cfg.get("model_type") or "model"), gathers)


#: Shapes of models whose CP prefill sglang documents, from their published config.json.
PRESETS = {
    # deepseek-ai/DeepSeek-V3.2-Exp: hidden 7168, kv_lora_rank 512, qk_rope_head_dim 64, index_head_dim 128.
    "deepseek-v3.2": {"hidden_size": 7168, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "index_head_dim": 128,
                      "num_attention_heads": 128},
    # Qwen/Qwen3-30B-A3B: hidden 2048, 4 KV heads of 128.
    "qwen3-30b-a3b": {"hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128},
    # Qwen/Qwen3-235B-A22B: hidden 4096, 4 KV heads of 128.
    "qwen3-235b-a22b": {"hidden_size": 4096, "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128},
}


def load_shape(model: str, kv_dtype: str = "bf16", attn_tp_size: int = 1) -> ModelShape:
    """A preset name, a ``config.json`` path, or a model folder holding one."""
    if model in PRESETS:
        return shape_from_config(PRESETS[model], kv_dtype, attn_tp_size, model)
    path = Path(model)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise SizingError(f"--model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a config.json "
                          "or a folder holding one")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SizingError(f"{path}: not a readable JSON file ({exc})") from None
    return shape_from_config(config, kv_dtype, attn_tp_size, str(model))


def small_pool_tokens(shape: ModelShape, cp_size: int, max_tokens: int) -> List[int]:
    """Short extend lengths that, run once, give the small-segment part of the pool its peak.

    Each gathered buffer (the output, ``rows * row`` bytes, and the staged send
    buffer, ``rows / cp * row``) is served from the small segments while it is at
    most 1 MiB and moves to the large ones above that. The bytes a forward holds
    in small segments therefore rise with the length and drop where one buffer
    crosses 1 MiB: the peak lies at one of those crossings. The result is each
    crossing's length (a multiple of ``cp_size``, so that every rank's share is
    whole), no shorter than CP splits and shorter than ``max_tokens``.
    """
    if cp_size < 1:
        raise SizingError(f"cp_size must be at least 1, not {cp_size}")
    lengths = set()
    for row in set(shape.gathers.values()):
        if row <= 0:
            continue
        for rows_per_buffer in (SMALL_ALLOCATION_BYTES // row, SMALL_ALLOCATION_BYTES // row * cp_size):
            tokens = rows_per_buffer // cp_size * cp_size
            if CP_MIN_TOKENS_PER_RANK * cp_size <= tokens < max_tokens:
                lengths.add(tokens)
    return sorted(lengths, reverse=True)


@dataclass(frozen=True)
class CpNeed:
    tokens: int
    rows: int
    cp_size: int
    per_gather: Dict[str, int]
    send_bytes: int  # the staged send buffers (SGLANG_CP_SYMM_SEND=1): one rank's share of each gather

    @property
    def output_bytes(self) -> int:
        return sum(self.per_gather.values())

    def total(self, send: bool) -> int:
        return self.output_bytes + (self.send_bytes if send else 0)


def cp_need(tokens: int, cp_size: int, shape: ModelShape) -> CpNeed:
    """Bytes the CP all-gathers of one forward of ``tokens`` tokens can hold at once in the symmetric pool."""
    rows = cp_rows(tokens, cp_size)
    per_gather = {name: rows * row for name, row in shape.gathers.items()}
    send = (rows // cp_size) * shape.row_bytes()
    return CpNeed(tokens, rows, cp_size, per_gather, send)


def prealloc_verdict(release, prealloc_gib: Optional[float], need_bytes: int, plugin_on: bool) -> dict:
    """Is ``SGLANG_SYMM_MEM_PREALLOC_GB_SIZE`` right for the CP all-gathers of one maximum request?

    Which pool the CP buffers use depends on the release: before 0.5.9 there is no
    pre-allocation; on 0.5.9-0.5.11 with the plugin the CP buffers come from the CP
    group's own pool (the pre-allocation is registered with the TP communicator only,
    sglang PR #21392), so its size does not matter to them; from 0.5.12 every
    segment is registered with every communicator, so the pre-allocation serves them.
    """
    from ..releases import Release

    gib = 1 << 30
    need = f"{need_bytes / gib:.2f} GiB"
    if release is not None and release < Release.parse("0.5.9"):
        return {"state": "no-prealloc", "message": f"sglang {release} pre-allocates no symmetric memory: the pool "
                f"grows on first use (about {need} for the CP all-gathers); keep the warm-up on"}
    size = DEFAULT_PREALLOC_GIB if prealloc_gib is None else prealloc_gib
    if size <= 0:
        return {"state": "off", "message": "SGLANG_SYMM_MEM_PREALLOC_GB_SIZE <= 0 turns the pre-allocation off: "
                f"the CP all-gathers grow the pool by about {need}; keep the warm-up on"}
    if plugin_on and release is not None and release < Release.parse("0.5.12"):
        return {"state": "not-used-by-cp", "message": f"on sglang {release} the plugin gives the CP group its own "
                f"pool (about {need}, filled by the warm-up); the {size:g} GiB pre-allocation serves the TP "
                "collectives only"}
    if size * gib < need_bytes:
        return {"state": "too-small", "message": f"the CP all-gathers of one maximum request need {need}, more "
                f"than the {size:g} GiB pre-allocated: the pool grows at run time; set "
                f"SGLANG_SYMM_MEM_PREALLOC_GB_SIZE={math.ceil(need_bytes * 1.25 / gib)} (the TP collectives share "
                "it) or keep the warm-up on"}
    if size * gib > 4 * need_bytes and size * gib - need_bytes > gib:
        return {"state": "large", "message": f"the CP all-gathers need {need} of the {size:g} GiB pre-allocated; "
                "if the TP collectives need little more, a smaller value returns memory to the KV cache"}
    return {"state": "ok", "message": f"the CP all-gathers need {need} of the {size:g} GiB pre-allocated"}
