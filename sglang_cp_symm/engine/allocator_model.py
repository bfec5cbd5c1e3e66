"""What the CP all-gathers of one forward need in the symmetric pool: PyTorch's caching allocator, sglang's
pre-allocation, and the words for both.

The forward comes from ``scheduler_rules``; the bytes per token row from the model's
config (``ModelShape``). ``size_pool`` assembles everything the running warm-up
(``warmup.plan_for``) and the doctor say about the pool, and ``pool_words`` and
``capped_words`` word it for both.

PyTorch's caching allocator, which serves sglang's symmetric ``MemPool``
(``c10/cuda/CUDACachingAllocator.cpp``): a request of at most 1 MiB
(``kSmallSize``) is served from 2 MiB "small" segments (``kSmallBuffer``), a larger
one from "large" segments (20 MiB for requests under 10 MiB, else the request
rounded up to 2 MiB); a free block of one kind never serves the other. One
maximum-length prefill therefore creates large segments only: the first short CP
prefill would still grow the pool, which is why the warm-up also runs the short
lengths of ``small_pool_tokens``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Dict, List, Optional

from .scheduler_rules import LongestForward, SizingError, cp_rows


#: Bytes of sglang's symmetric pre-allocation when ``--enable-symm-mem`` is on and the variable is unset
#: (``server_args.py``: ``envs.SGLANG_SYMM_MEM_PREALLOC_GB_SIZE.set(4)``, 0.5.9 line 1072 onwards).
DEFAULT_PREALLOC_GIB = 4
#: PyTorch's caching allocator: the largest request served from the 2 MiB "small" segments (kSmallSize).
SMALL_ALLOCATION_BYTES = 1 << 20
#: The allocator's segment sizes (CUDACachingAllocator.cpp): kSmallBuffer, kLargeBuffer for requests under
#: kMinLargeAlloc, and the rounding of larger ones (kRoundLarge).
SMALL_SEGMENT_BYTES = 2 << 20
LARGE_SEGMENT_BYTES = 20 << 20
MIN_LARGE_ALLOC_BYTES = 10 << 20
LARGE_ROUND_BYTES = 2 << 20
#: The shortest extend sglang splits across CP ranks: ``can_cp_split`` needs ``seq_len // (2 * cp_size) != 0``.
CP_MIN_TOKENS_PER_RANK = 2


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


_DTYPE_BYTES = MappingProxyType({"auto": 2, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "half": 2, "fp8": 1,
                                 "fp8_e4m3": 1, "fp8_e5m2": 1, "fp4_e2m1": 1, "fp32": 4, "float32": 4})


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
        raise SizingError("cannot read the attention shape from the model config "
                          f"({type(exc).__name__}: {exc})") from None
    gathers["hidden_states"] = hidden * 2
    return ModelShape(name or str(cfg.get("model_type") or "model"), gathers)


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

    def buffers(self, send: bool) -> List[int]:
        """The buffers held at once: each gathered output, and with ``send`` the staged send share."""
        return list(self.per_gather.values()) + ([self.send_bytes] if send else [])

    def total(self, send: bool) -> int:
        return sum(self.buffers(send))


def cp_need(tokens: int, cp_size: int, shape: ModelShape) -> CpNeed:
    """Bytes the CP all-gathers of one forward of ``tokens`` tokens can hold at once in the symmetric pool."""
    rows = cp_rows(tokens, cp_size)
    per_gather = {name: rows * row for name, row in shape.gathers.items()}
    send = (rows // cp_size) * shape.row_bytes()
    return CpNeed(tokens, rows, cp_size, per_gather, send)


def segment_for(request_bytes: int) -> int:
    """The segment the caching allocator creates for a request no free block can serve."""
    if request_bytes <= SMALL_ALLOCATION_BYTES:
        return SMALL_SEGMENT_BYTES
    if request_bytes < MIN_LARGE_ALLOC_BYTES:
        return LARGE_SEGMENT_BYTES
    return -(-request_bytes // LARGE_ROUND_BYTES) * LARGE_ROUND_BYTES


def rising_growth(held_bytes: int, largest_bytes: int) -> tuple:
    """(bytes, growths) the pool adds for one buffer whose size rises, one length at a time, from one the pool
    holds a segment for (``held_bytes``; 0: none) to ``largest_bytes``. The worst order for the caching
    allocator: it serves a request from the smallest free block that fits and never joins segments, so each
    request above the largest segment held adds a new one (``segment_for``), 2 MiB larger than the last above
    20 MiB. Requests of at most 1 MiB come from the small segments, which the short prompts fill."""
    if largest_bytes <= SMALL_ALLOCATION_BYTES:
        return 0, 0
    held = segment_for(held_bytes) if held_bytes > SMALL_ALLOCATION_BYTES else 0
    grown = count = 0
    while held < largest_bytes:
        held = segment_for(max(held + 1, SMALL_ALLOCATION_BYTES + 1))  # the smallest request it cannot serve
        grown, count = grown + held, count + 1
    return grown, count


def capped_growth_bound(forward: LongestForward, cp_size: int, shape: ModelShape, send: bool = False) -> tuple:
    """(bytes, growths) a capped warm-up may leave to serving at most: each gathered buffer (and staged send
    share) rising from its size at the warm-up's forward to its size at the scheduler's largest, lengths arriving
    in rising order (``rising_growth``; buffers counted apart, as if all were alive at once). (0, 0) uncapped."""
    if not forward.capped:
        return 0, 0
    low = cp_need(forward.tokens, cp_size, shape).buffers(send)
    high = cp_need(forward.scheduler_tokens, cp_size, shape).buffers(send)
    total = count = 0
    for held, largest in zip(low, high):
        grown, times = rising_growth(held, largest)
        total, count = total + grown, count + times
    return total, count


def growth_left_by_cap(forward: LongestForward, cp_size: int, shape: ModelShape, send: bool = False) -> int:
    """Bytes of CP buffers a capped warm-up leaves for serving to add to the pool: the scheduler's largest
    forward's need minus the warm-up's (0 when not capped)."""
    if not forward.capped:
        return 0
    full = cp_need(forward.scheduler_tokens, cp_size, shape).total(send)
    return max(0, full - cp_need(forward.tokens, cp_size, shape).total(send))


#: ``prealloc_verdict`` states in which the pre-allocation holds the CP buffers (the pool does not grow for them).
PREALLOC_HOLDS = ("ok", "large")


def _packed(sizes: List[int], segment: int) -> int:
    """Segments of ``segment`` bytes that hold ``sizes`` at once, first fit, largest first."""
    free: List[int] = []
    for size in sorted(sizes, reverse=True):
        for i, room in enumerate(free):
            if room >= size:
                free[i] -= size
                break
        else:
            free.append(segment - size)
    return len(free)


def reserved_for(buffers: List[int]) -> int:
    """Bytes the caching allocator reserves, in a pool that holds nothing yet, to hold ``buffers`` at once:
    one segment each from 10 MiB (rounded to 2 MiB), 20 MiB segments shared by those above 1 MiB, 2 MiB ones by
    the rest (``segment_for``)."""
    large = [b for b in buffers if b >= MIN_LARGE_ALLOC_BYTES]
    middle = [b for b in buffers if SMALL_ALLOCATION_BYTES < b < MIN_LARGE_ALLOC_BYTES]
    small = [b for b in buffers if 0 < b <= SMALL_ALLOCATION_BYTES]
    return (sum(segment_for(b) for b in large) + _packed(middle, LARGE_SEGMENT_BYTES) * LARGE_SEGMENT_BYTES
            + _packed(small, SMALL_SEGMENT_BYTES) * SMALL_SEGMENT_BYTES)


def warmup_reservation(forward_tokens: int, short_prompts: List[int], cp_size: int, shape: ModelShape,
                       send: bool = False) -> int:
    """The pool the warm-up's prompts leave reserved, from an empty one: the segments of the longest forward's
    buffers (all alive at once: an upper estimate), then the small segments of the short prompt that needs the
    most of them (their larger buffers fit in the long forward's free segments)."""
    longest = reserved_for(cp_need(forward_tokens, cp_size, shape).buffers(send))
    small = max((_packed([b for b in cp_need(t, cp_size, shape).buffers(send) if b <= SMALL_ALLOCATION_BYTES],
                         SMALL_SEGMENT_BYTES) for t in short_prompts), default=0)
    return longest + small * SMALL_SEGMENT_BYTES


#: The variable sglang reads its symmetric pre-allocation from (``environ.py``: ``EnvInt(-1)``, 0.5.9-0.5.23).
PREALLOC_VARIABLE = "SGLANG_SYMM_MEM_PREALLOC_GB_SIZE"


def prealloc_gib_from(raw: Optional[str]) -> int:
    """The GiB sglang pre-allocates with symmetric memory on, from ``SGLANG_SYMM_MEM_PREALLOC_GB_SIZE`` as the
    environment holds it (``raw``), by sglang's own rule (the same in 0.5.9-0.5.23): unset, the server arguments
    set 4 (``server_args.py`` 0.5.11 lines 1490-1491); set, ``int(raw)``, or sglang's default -1 where ``int``
    refuses it (``EnvField.get``, ``environ.py`` 0.5.11 lines 62-72); 0 or less pre-allocates nothing
    (``prealloc_symmetric_memory_pool``, ``model_runner.py`` 0.5.11 line 3411). The engine and the doctor both
    read it here."""
    if raw is None:
        return DEFAULT_PREALLOC_GIB
    try:
        return int(raw)
    except ValueError:
        return -1


def prealloc_verdict(release, prealloc_gib: Optional[float], need_bytes: int, plugin_on: bool) -> dict:
    """Is ``SGLANG_SYMM_MEM_PREALLOC_GB_SIZE`` right for the CP all-gathers of one maximum request?
    ``prealloc_gib``: what sglang pre-allocates (``prealloc_gib_from``), None where the variable is unset.

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
    size = prealloc_gib_from(None) if prealloc_gib is None else prealloc_gib  # None: the variable unset
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


@dataclass(frozen=True)
class PoolSizing:
    """What the warm-up's longest forward means for the symmetric pool, assembled once (``size_pool``) for the
    running warm-up (``warmup.plan_for``) and the doctor alike, and worded once (``pool_words``)."""

    short_prompts: tuple
    need_bytes: int  # the CP buffers of the longest forward, held at once
    gather_bytes: Dict[str, int]
    left_bytes: int  # capped: how much the CP buffers' peak still rises (the least growth left to serving)
    left_most: tuple  # capped: (bytes, growths) left at most, lengths arriving in rising order
    prealloc: dict  # ``prealloc_verdict``
    growth_bytes: int  # what the warm-up is expected to add to the pool (0: the pre-allocation holds it)

    @property
    def holds(self) -> bool:
        return self.prealloc.get("state") in PREALLOC_HOLDS


def sizing_fields(sizing: Optional[PoolSizing]) -> dict:
    """The sizing's figures as the warm-up's record and the doctor's JSON both give them (None: unsized)."""
    most = sizing.left_most if sizing else (None, None)
    return {"need_bytes": sizing and sizing.need_bytes, "gather_bytes": sizing and dict(sizing.gather_bytes),
            "left_bytes": sizing and sizing.left_bytes, "left_most_bytes": most[0], "left_most_growths": most[1],
            "prealloc": sizing and sizing.prealloc, "growth_bytes": sizing and sizing.growth_bytes}


def size_pool(forward: LongestForward, cp_size: int, shape: ModelShape, send: bool, release,
              prealloc_gib: Optional[float], plugin_on: bool) -> PoolSizing:
    """The pool the CP all-gathers of ``forward`` need, the short prompts that fill the small segments, and what
    the pre-allocation does about it. ``send``: the plan stages the send buffers too."""
    need = cp_need(forward.tokens, cp_size, shape)
    short = small_pool_tokens(shape, cp_size, forward.tokens)
    left = growth_left_by_cap(forward, cp_size, shape, send)
    verdict = prealloc_verdict(release, prealloc_gib, need.total(send) + left, plugin_on)
    holds = verdict["state"] in PREALLOC_HOLDS  # the pre-allocation holds the buffers: the warm-up adds nothing
    growth = 0 if holds else warmup_reservation(forward.tokens, short, cp_size, shape, send)
    return PoolSizing(tuple(short), need.total(send), dict(need.per_gather), left,
                      capped_growth_bound(forward, cp_size, shape, send), verdict, growth)


def pool_words(sizing: PoolSizing) -> str:
    """The CP buffers and the growth expected, as the doctor and the warm-up's plan line both say it (after the
    words "CP buffers")."""
    gathers = ", ".join(f"{name} {value / 2**20:.1f} MiB" for name, value in sizing.gather_bytes.items())
    grows = ("the pre-allocation holds them: no growth expected" if not sizing.growth_bytes
             else f"the warm-up grows the pool by about {sizing.growth_bytes / 2**20:.1f} MiB (whole segments)")
    return f"{sizing.need_bytes / 2**20:.1f} MiB at most at once ({gathers}); {grows}"


def capped_message(forward: LongestForward, left_bytes: Optional[int], watchdog_on: bool,
                   most: Optional[tuple] = None, held_by: Optional[str] = None) -> Optional[str]:
    """What a capped warm-up leaves to serving; None when not capped.

    ``left_bytes`` (``growth_left_by_cap``): how much the CP buffers' peak still rises
    between the warm-up's forward and the scheduler's largest, the least the pool can
    grow by; ``most`` (``capped_growth_bound``): bytes and growths when such lengths
    arrive in rising order, the worst case; ``held_by``: what holds them instead (a
    pre-allocation large enough), when something does.
    """
    if not forward.capped:
        return None
    left = f"{left_bytes / 2**20:.1f} MiB" if left_bytes is not None else "an unknown amount"
    if held_by:
        growth = f"; {held_by} holds them, so the pool does not grow while it has room"
    else:
        worst = (f", and by up to {most[0] / 2**20:.1f} MiB in {most[1]} growth(s) if such lengths arrive in rising "
                 "order (the caching allocator never joins segments)" if most and most[1] else "")
        growth = f", so the symmetric pool may still grow at run time by at least that{worst}"
    watch = ("the watchdog stays on and reports each growth" if watchdog_on
             else "the watchdog is off (SGLANG_CP_SYMM_WATCHDOG=0): such growths go unreported")
    return (f"capped by SGLANG_CP_SYMM_WARMUP_TOKENS={forward.prompt}: forwards of {forward.tokens + 1}-"
            f"{forward.scheduler_tokens} tokens need {left} more CP buffers at once than the warm-up reached"
            f"{growth}; {watch}")


def capped_words(forward: LongestForward, sizing: Optional[PoolSizing], watchdog_on: bool) -> Optional[str]:
    """``capped_message`` for a sized pool (or an unsized one)."""
    if sizing is None:
        return capped_message(forward, None, watchdog_on)
    return capped_message(forward, sizing.left_bytes, watchdog_on, sizing.left_most,
                          "the symmetric pre-allocation" if sizing.holds else None)
