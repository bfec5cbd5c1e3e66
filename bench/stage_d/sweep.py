"""What the harness gathers: model shapes, total lengths with uneven per-rank shares, dtypes, latency sizes.

Shapes (from each model's ``config.json`` on the Hugging Face hub):
- DeepSeek-V3.2: the MLA latent KV row is ``kv_lora_rank`` 512 + ``qk_rope_head_dim`` 64 = 576 values, one
  "head"; ``hidden_size`` 7168.
- Qwen3-30B-A3B (Qwen3-MoE): ``num_key_value_heads`` 4 x ``head_dim`` 128 for K (and again for V);
  ``hidden_size`` 2048 (``tests/models/qwen3-30b-a3b/config.json``).

fp8: neither sglang's pynccl (``ncclDataTypeEnum.from_torch`` raises "Unsupported dtype" for float8) nor
gloo ("Invalid scalar type") moves a float8 tensor, so sglang moves fp8 payloads as bytes (0.5.17's DCP
path views them as uint8). The sweep does the same: an fp8 e4m3 payload, viewed as uint8 for the gather,
compared bit for bit; and it records once, per mode, that the gather rejects a float8 tensor handed to it
directly, identically in every mode.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Sequence, Tuple

MiB = 1 << 20
#: The sizes of the gathered output the issue asks latency and bus bandwidth at (nccl-tests' convention:
#: the all-gather's total receive bytes).
LATENCY_MIB = (0.5, 2, 8, 32, 128)
#: 8xH100 references (issue 6; sglang PR #37337's measurements): symmetric vs ring time ratio, ring busBW.
REFERENCES = {"speedup_2MiB": 1.86, "speedup_128MiB": 1.06, "ring_busbw_GBps": 360,
              "symmetric_us_2MiB": 10.9, "ring_us_2MiB": 20.2, "symmetric_us_128MiB": 363, "ring_us_128MiB": 385}


@dataclass(frozen=True)
class Payload:
    """One tensor shape the CP all-gathers carry: ``rest`` is the shape after the token dimension."""

    model: str
    what: str
    rest: Tuple[int, ...]
    dtype: str  # "bfloat16" or "fp8" (float8_e4m3fn carried as uint8)

    @property
    def label(self) -> str:
        return f"{self.model} {self.what} {self.dtype}"

    def row_bytes(self) -> int:
        n = 1
        for d in self.rest:
            n *= d
        return n * (2 if self.dtype == "bfloat16" else 1)


KV = (
    Payload("DeepSeek-V3.2", "latent KV", (1, 576), "bfloat16"),
    Payload("DeepSeek-V3.2", "latent KV", (1, 576), "fp8"),
    Payload("Qwen3-30B-A3B", "K", (4, 128), "bfloat16"),
)
HIDDEN = (
    Payload("DeepSeek-V3.2", "hidden", (7168,), "bfloat16"),
    Payload("Qwen3-30B-A3B", "hidden", (2048,), "bfloat16"),
)
#: The payload latency is measured with: Qwen3 K rows are 1 KiB, so every size is a whole number of rows.
LATENCY_PAYLOAD = KV[2]


def payloads(kind: str, quick: bool = False) -> Tuple[Payload, ...]:
    """Every shape of the kind; ``quick`` (the CI dry run): DeepSeek-V3.2's latent KV in bf16 and fp8, and
    Qwen3's hidden rows."""
    if quick:
        return KV[:2] if kind == "kv" else HIDDEN[1:]
    return KV if kind == "kv" else HIDDEN


def totals(cp: int, long: bool = False, quick: bool = False) -> List[int]:
    """Total lengths, all but one not divisible by ``cp``; ``long`` adds prefill-sized ones (GPU); ``quick``
    keeps three (two uneven, one even)."""
    if quick:
        return [cp + 1, 61 if 61 % cp else 67, 4 * cp]
    base = [cp + 1, 3 * cp - 1, 61, 4 * cp, 127] + ([1021, 4099, 8191, 32771] if long else [])
    seen, out = set(), []
    for t in base:
        if t > 0 and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def uneven_split(rng: random.Random, total: int, cp: int) -> List[int]:
    """Per-rank token counts summing to ``total``, each at most ceil(total / cp), the shortfall spread at
    random (sglang's ``max_rank_len`` is that ceiling; the shorter ranks pad to it before the gather). A total
    divisible by ``cp`` gives equal shares: the one even case of the sweep."""
    max_len = (total + cp - 1) // cp
    lengths = [max_len] * cp
    excess = max_len * cp - total
    while excess:
        r = rng.randrange(cp)
        if lengths[r] > 0:
            lengths[r] -= 1
            excess -= 1
    return lengths


def interleave_split(total: int, cp: int) -> List[int]:
    """Rank r owns tokens r, r+cp, r+2cp, ... (sglang's interleave / round-robin layout)."""
    return [len(range(r, total, cp)) for r in range(cp)]


def rows_for(size_bytes: float, payload: Payload, cp: int) -> int:
    """Rows per rank so that the gathered output is ``size_bytes`` (rounded down to whole rows)."""
    return max(1, int(size_bytes // (payload.row_bytes() * cp)))


def make_rows(torch, seed: int, rows: int, payload: Payload, device) -> "torch.Tensor":
    """Deterministic rows: every rank can rebuild every other rank's input for the expected result."""
    gen = torch.Generator(device=device).manual_seed(seed)
    values = torch.randn((rows, *payload.rest), generator=gen, dtype=torch.float32, device=device)
    if payload.dtype == "fp8":
        return values.to(torch.float8_e4m3fn).view(torch.uint8)
    return values.to(torch.bfloat16)


def case_seed(cp: int, total: int, index: int, rank: int) -> int:
    return ((cp * 1_000_003 + total) * 101 + index) * 1009 + rank


def bytes_per_rank(lengths: Sequence[int], payload: Payload) -> int:
    return max(lengths) * payload.row_bytes()
