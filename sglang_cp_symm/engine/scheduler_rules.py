"""How many tokens one prefill forward can carry: sglang's scheduler rules, without a server.

The warm-up uses these rules (with ``allocator_model`` for what the forward
needs in the pool) with the running server's resolved arguments and the
doctor with the operator's command-line values, so the two never disagree; a
table-driven test (``tests/engine/test_longest_forward.py``) runs each release's own
``PrefillAdder`` and ``validate_input_length`` on the same arguments and asserts the
same figure. The rules are sglang's own (read in the release wheels, ``managers/``):

- ``PrefillAdder.add_one_req`` extends a new request whole when its page-rounded
  length fits ``rem_chunk_tokens``, else it cuts the first chunk at
  ``rem_chunk_tokens // page_size * page_size`` (``schedule_policy.py`` 0.5.11 lines
  878 and 893). ``add_chunked_req`` then extends each further chunk by
  ``min(rem_chunk_tokens, rem_total_tokens)``, with no page rounding (0.5.12 line 672).
  So the largest extend of one forward is ``chunked_prefill_size`` itself; every launch
  has it a multiple of ``page_size`` (``check_server_args`` asserts it, 0.5.10
  ``server_args.py`` line 6110), so a prompt of that length is one forward.
- ``max_prefill_tokens`` never bounds one request: the first request of a batch is
  admitted whatever its length (the ``len(self.can_run_list) != 0`` test, 0.5.10 lines
  767 and 790). With chunking off (``--chunked-prefill-size -1``) the whole prompt is
  one forward.
- Under DP attention the server divides ``chunked_prefill_size`` by the DP size
  when it resolves its arguments, so the resolved value is per DP rank; every figure
  here is per DP rank (each has its own scheduler and KV pool). Attention CP divides
  nothing: the model splits the forward across the CP ranks.
- The longest prompt: the scheduler refuses ``len(ids) >= max_req_input_len``
  (``utils.validate_input_length``), where ``max_req_input_len = min(context_len - 1,
  pool - 1) - 5`` (``tp_worker.py``); and it admits a prompt only while ``N +
  max_new_tokens (+ page_size from 0.5.11) < free KV tokens`` (0.5.11 line 822), else
  the request waits in the queue with NO_TOKEN, never scheduled on an idle server.
  On 0.5.11+ with pages of more than 6 tokens and a pool near or below the context,
  the second bound is the tighter one (``longest_admitted_prompt``).
- An attention-CP all-gather returns ``ceil(N / cp) * cp`` rows for N extend
  tokens (``prepare_context_parallel_metadata``: ``max_rank_len = ceil(kv_len /
  cp_size)`` on every rank, ``layers/utils/cp_utils.py``); CP-v2 (0.5.16+) pads each
  share further to a multiple of ``cp`` or ``2 * cp``, fewer than ``2 * cp * cp`` rows.

"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


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


#: The warm-up's requests ask for one new token; the KV admission counts it (``max_new_tokens``, clipped at 4096).
WARMUP_NEW_TOKENS = 1
#: From this release ``add_one_req`` reserves one page more per request in its KV admission test
#: (``total_tokens = extend_input_len + max_new + self.page_size``, schedule_policy.py 0.5.11 line 822; 0.5.21+
#: ``per_req_token_overhead``, which is the page unless the KV cache is sharded).
PAGE_RESERVED_FROM = (0, 5, 11)
#: sglang's ``chunked_prefill_size`` when none is given on a GPU of 80-160 GB (H100, H200, H20;
#: ``_handle_gpu_memory_settings``, 0.5.6-0.5.23): what a server would chunk at, were chunking on.
REFERENCE_CHUNK = 8192
#: With chunking off, a longest forward at least this many times ``REFERENCE_CHUNK`` gets one warning.
FAR_ABOVE_FACTOR = 2


def admission_overhead(page_size: int, release=None) -> int:
    """Tokens the KV admission test adds per request beyond its prompt and new tokens (unknown release: newest)."""
    return max(1, int(page_size or 1)) if release is None or tuple(release) >= PAGE_RESERVED_FROM else 0


def max_req_input_len_of(context_len: int, pool_tokens: Optional[int] = None) -> int:
    """sglang's bound on a prompt (``tp_worker.py``): ``min(context_len - 1, pool - 1) - 5``; a prompt must be
    shorter."""
    longest = int(context_len) - 1 if pool_tokens is None else min(int(context_len) - 1, int(pool_tokens) - 1)
    return longest - 5


@dataclass(frozen=True)
class PromptBound:
    """The longest prompt one DP rank's scheduler both accepts and admits, and which of the two bounds it."""

    tokens: Optional[int]
    source: str


def longest_admitted_prompt(max_req_input_len: Optional[int] = None, context_len: Optional[int] = None,
                            pool_tokens: Optional[int] = None, page_size: int = 1, release=None) -> PromptBound:
    """The longest prompt that passes ``validate_input_length`` and then the KV admission of ``add_one_req``.

    - accepted: ``N < max_req_input_len`` (given, or from the context length and the pool);
    - admitted on an idle server: ``N + 1 new token + overhead < free KV tokens``, where the
      free tokens are the pool in whole pages and the overhead a page from 0.5.11
      (``admission_overhead``). A prompt that is accepted but not admitted is never
      scheduled: it waits in the queue (NO_TOKEN), which is why both bounds count.

    The pool, when not given: where ``max_req_input_len`` shows the pool was the
    tighter bound (``max_req_input_len + 6 < context_len``) it is exactly
    ``max_req_input_len + 6``; otherwise only "at least that" is known, and that
    smallest pool is assumed (the prompt is then admitted whatever the pool is).
    With neither a pool nor ``max_req_input_len`` (the doctor without
    ``--max-total-tokens``), the pool is taken to be larger than the context.
    """
    page = max(1, int(page_size or 1))
    pool_note = ""
    if max_req_input_len is not None:
        bound = int(max_req_input_len)
        accepted, accepted_from = bound - 1, f"max_req_input_len {bound} - 1"
        if pool_tokens is None:
            pool_tokens = bound + 6
            exact = context_len is not None and bound + 6 < int(context_len)
            pool_note = "" if exact else " (pool not reported: the smallest that max_req_input_len allows)"
    elif context_len is not None:
        bound = max_req_input_len_of(context_len, pool_tokens)
        accepted = bound - 1
        accepted_from = (f"context length {context_len} - 7" if pool_tokens is None or pool_tokens >= context_len
                         else f"KV pool {pool_tokens} - 7")
    else:
        return PromptBound(None, "no context length or max_req_input_len known")
    if pool_tokens is None:
        return PromptBound(accepted, accepted_from)
    free = int(pool_tokens) // page * page
    overhead = admission_overhead(page, release)
    admitted = free - WARMUP_NEW_TOKENS - overhead - 1
    if admitted < accepted:
        reserve = f" - {overhead} (one page, reserved per request from 0.5.11)" if overhead else ""
        return PromptBound(admitted, f"KV admission: {free} free tokens - 1 new token{reserve} - 1{pool_note}")
    return PromptBound(accepted, accepted_from)


def largest_forward_of(prompt: int, chunked_prefill_size: Optional[int], page_size: int = 1) -> int:
    """The longest extend among the forwards of one ``prompt``-token prefill (no cached prefix).

    ``add_one_req`` takes it whole when ``ceil(N / page) * page`` fits the chunk, else the
    page-aligned first chunk; ``add_chunked_req`` then extends ``min(chunk, rest)``.
    """
    chunk = chunked_prefill_size if chunked_prefill_size is not None and chunked_prefill_size > 0 else None
    if chunk is None:
        return prompt
    page = max(1, int(page_size or 1))
    if math.ceil(prompt / page) * page <= chunk:
        return prompt
    first = chunk // page * page
    return max(first, min(chunk, prompt - first))


@dataclass(frozen=True)
class LongestForward:
    """The warm-up's longest forward next to the largest one the scheduler would run for one request."""

    tokens: int  # the warm-up's longest forward
    prompt: int  # the prompt whose prefill contains it
    scheduler_tokens: int  # the largest forward the scheduler would run for one request on this server
    chunk: int  # the resolved chunked_prefill_size of one DP rank; -1: chunking off
    source: str  # where scheduler_tokens came from
    capped: bool = False  # SGLANG_CP_SYMM_WARMUP_TOKENS set the warm-up below scheduler_tokens
    note: str = ""  # an override that had to be clamped says so here

    @property
    def chunking_off(self) -> bool:
        return self.chunk <= 0

    def far_above_reference(self) -> Optional[float]:
        """With chunking off and no cap: how many times ``REFERENCE_CHUNK`` the forward is, when at least
        ``FAR_ABOVE_FACTOR``; else None."""
        ratio = self.tokens / REFERENCE_CHUNK
        return ratio if self.chunking_off and not self.capped and ratio >= FAR_ABOVE_FACTOR else None

    def describe(self) -> dict:
        return {"tokens": self.tokens, "prompt": self.prompt, "scheduler_tokens": self.scheduler_tokens,
                "chunk": self.chunk, "source": self.source, "capped": self.capped, "note": self.note}


def whence_words(forward: dict, source: Optional[str] = None) -> str:
    """Where the longest forward's figure came from, as the warm-up's plan line, the status line and the doctor
    say it (``forward``: ``LongestForward.describe()``; ``source``: its source with the doctor's additions)."""
    source = forward.get("source") if source is None else source
    if not forward.get("capped"):
        return source
    largest = forward.get("scheduler_tokens")
    return f"capped by SGLANG_CP_SYMM_WARMUP_TOKENS; the scheduler's largest: {largest}, {source}"


def longest_forward(chunked_prefill_size: Optional[int], page_size: int = 1, max_req_input_len: Optional[int] = None,
                    context_len: Optional[int] = None, pool_tokens: Optional[int] = None, release=None,
                    override: Optional[int] = None) -> LongestForward:
    """The largest forward the scheduler would run for one request, from *resolved* server arguments of one DP
    rank, and the warm-up's (the same, unless ``override``, ``SGLANG_CP_SYMM_WARMUP_TOKENS``, sets the prompt).

    With chunking on it is the chunk, or the longest admitted prompt where that is
    shorter; with chunking off the longest admitted prompt, as one forward.
    """
    page = max(1, int(page_size or 1))
    chunk = chunked_prefill_size if chunked_prefill_size is not None and chunked_prefill_size > 0 else -1
    bound = longest_admitted_prompt(max_req_input_len, context_len, pool_tokens, page, release)
    if bound.tokens is not None and bound.tokens <= 0:
        raise SizingError(f"the server admits no prompt at all ({bound.source})")
    if chunk > 0:
        prompt, source = chunk, f"chunked_prefill_size {chunk} per DP rank"
        if chunk % page:  # a launch refuses this (check_server_args); kept exact for the arithmetic's sake
            if chunk < page:
                raise SizingError(f"chunked_prefill_size {chunk} is smaller than page_size {page}")
            prompt = chunk // page * page + chunk  # the page-aligned first chunk, then a full one
        if bound.tokens is not None and bound.tokens < prompt:
            prompt = bound.tokens
            if bound.tokens < chunk:
                source = (f"the longest prompt the scheduler admits, {bound.source}, shorter than "
                          f"chunked_prefill_size {chunk}")
        most = largest_forward_of(prompt, chunk, page)
    else:
        if bound.tokens is None:
            raise SizingError("chunked prefill is off (-1) and no context length is known: pass the context length")
        most, prompt = bound.tokens, bound.tokens
        source = f"the longest prompt the scheduler admits, {bound.source}; chunked prefill off: one forward"
    if not override:
        return LongestForward(most, prompt, most, chunk, source)
    note = ""
    asked = int(override)
    if bound.tokens is not None and asked > bound.tokens:
        note = (f"SGLANG_CP_SYMM_WARMUP_TOKENS={asked} is longer than the longest prompt this server admits "
                f"({bound.tokens}); using {bound.tokens}")
        asked = bound.tokens
    tokens = largest_forward_of(asked, chunk, page)
    return LongestForward(tokens, asked, most, chunk, source, capped=tokens < most, note=note)


def far_above_message(forward: LongestForward) -> Optional[str]:
    """The one warning for a warm-up forward far above a chunk (chunking off, no cap); None when not so."""
    ratio = forward.far_above_reference()
    if ratio is None:
        return None
    return (f"chunked prefill is off (--chunked-prefill-size -1), so the warm-up runs one forward of "
            f"{forward.tokens} tokens, {ratio:.1f}x the {REFERENCE_CHUNK}-token chunk sglang uses by default on an "
            "80-160 GB GPU. The scheduler runs a prompt that long the same way (max_prefill_tokens does not split "
            "it), so this is the honest maximum; if your prompts are never that long, cap the warm-up with "
            "SGLANG_CP_SYMM_WARMUP_TOKENS=<your longest prompt> (longer forwards may then grow the pool at run "
            "time, and the watchdog reports them).")


def context_from_config(config: dict) -> Optional[int]:
    """A model's context length where its ``config.json`` states it plainly (``max_position_embeddings`` and no
    ``rope_scaling``, which sglang may apply); else None (pass ``--context-length``)."""
    cfg = config.get("text_config") or config
    value = cfg.get("max_position_embeddings")
    if cfg.get("rope_scaling") or not isinstance(value, int) or value <= 0:
        return None
    return value


def cp_rows(tokens: int, cp_size: int) -> int:
    """Rows of an attention-CP all-gather's output for ``tokens`` tokens: every rank pads to the longest share."""
    if cp_size < 1:
        raise SizingError(f"cp_size must be at least 1, not {cp_size}")
    return math.ceil(tokens / cp_size) * cp_size
