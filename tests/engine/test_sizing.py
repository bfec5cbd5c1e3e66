"""Stage A: how long the warm-up's prompts are and what the CP all-gathers need (pure functions, no sglang).

Each rule cites the sglang or PyTorch source it follows (sglang_cp_symm/engine/scheduler_rules.py and allocator_model.py);
tests/engine/test_longest_forward.py checks the longest forward against each release's own ServerArgs and
scheduling code (PrefillAdder), tests/engine/test_warmup.py the plan the warm-up sends.
"""

import json

import pytest

from sglang_cp_symm.engine import allocator_model as alloc
from sglang_cp_symm.engine import scheduler_rules as rules
from sglang_cp_symm.tools import model_presets as presets
from sglang_cp_symm.releases import Release

MIB = 1 << 20


@pytest.mark.parametrize("chunk,dp,dp_attention,expected", [
    (8192, 1, False, 8192), (8192, 2, True, 4096), (8192, 2, False, 8192), (8192, 3, True, 2730),
    (-1, 2, True, -1), (None, 1, False, -1),
])
def test_per_dp_chunk_divides_only_under_dp_attention(chunk, dp, dp_attention, expected):
    assert rules.per_dp_chunk(chunk, dp, dp_attention) == expected


R10, R11 = Release.parse("0.5.10"), Release.parse("0.5.11")


def test_largest_forward_of_one_prompt_follows_add_one_req_then_add_chunked_req():
    assert rules.largest_forward_of(40000, 8192, 64) == 8192  # 8192 x4, then 7232
    assert rules.largest_forward_of(8192, 8192, 64) == 8192  # one forward
    assert rules.largest_forward_of(8193, 8192, 64) == 8192  # 8192, then 1
    assert rules.largest_forward_of(1000, 500, 64) == 500  # 448 (page-aligned first chunk), 500, 52
    assert rules.largest_forward_of(40000, -1, 64) == 40000  # chunking off: one forward
    assert rules.largest_forward_of(300, 512, 64) == 300


def test_with_chunking_on_the_longest_forward_is_the_chunk():
    f = rules.longest_forward(8192, max_req_input_len=40954)
    assert (f.tokens, f.prompt, f.scheduler_tokens, f.capped) == (8192, 8192, 8192, False)
    assert f.source == "chunked_prefill_size 8192 per DP rank"
    # a chunk that is not a multiple of the page (a launch refuses it): the second chunk carries the full 8100
    f = rules.longest_forward(8100, 64)
    assert (f.tokens, f.prompt) == (8100, 8064 + 8100)
    f = rules.longest_forward(8100, 64, context_len=10000)
    assert (f.tokens, f.prompt) == (8064, 9993)  # capped by the longest prompt: 8064, then 1929
    # a pool or context shorter than the chunk: the longest admitted prompt, in one forward
    f = rules.longest_forward(8192, max_req_input_len=4001)
    assert (f.tokens, f.prompt) == (4000, 4000) and "shorter than chunked_prefill_size 8192" in f.source


def test_with_chunking_off_the_longest_forward_is_the_longest_admitted_prompt():
    assert rules.longest_forward(-1, max_req_input_len=131067).tokens == 131066  # len >= max_req_input_len is refused
    f = rules.longest_forward(-1, context_len=32768)
    assert f.tokens == 32761 and "context length 32768 - 7" in f.source  # min(ctx - 1, pool - 1) - 5, minus one
    assert rules.longest_forward(None, max_req_input_len=20000).chunk == -1


@pytest.mark.parametrize("kwargs,release,tokens,needle", [
    # 0.5.11+: pages of 64 and a pool below the context: accepted (29945) but never admitted; the KV bound wins
    (dict(context_len=40960, pool_tokens=29952, page_size=64), R11, 29886, "KV admission: 29952 free tokens"),
    (dict(context_len=40960, pool_tokens=29952, page_size=64), R10, 29945, "KV pool 29952 - 7"),
    # the same pool told by max_req_input_len alone (29946 + 6 < the context: the pool is exactly 29952)
    (dict(max_req_input_len=29946, context_len=40960, page_size=64), R11, 29886, "29952 free tokens - 1 new token"),
    # a pool as large as the context: the context bounds validation, the pool's last page bounds admission
    (dict(context_len=40960, pool_tokens=40960, page_size=64), R11, 40894, "reserved per request from 0.5.11"),
    (dict(max_req_input_len=40954, context_len=40960, page_size=64), R11, 40894, "pool not reported"),
    (dict(context_len=40960, pool_tokens=1 << 20, page_size=64), R11, 40953, "context length 40960 - 7"),
    # pages of 1: validation always binds (the pool holds 6 tokens more than max_req_input_len allows)
    (dict(max_req_input_len=29946, page_size=1), R11, 29945, "max_req_input_len 29946 - 1"),
])
def test_the_longest_admitted_prompt_passes_validation_and_the_kv_admission(kwargs, release, tokens, needle):
    bound = rules.longest_admitted_prompt(release=release, **kwargs)
    assert bound.tokens == tokens and needle in bound.source, bound
    assert rules.longest_forward(-1, release=release, **kwargs).tokens == tokens


def test_admission_overhead_is_one_page_from_0_5_11():
    assert rules.admission_overhead(64, R10) == 0
    assert rules.admission_overhead(64, R11) == 64 and rules.admission_overhead(64, None) == 64
    assert rules.admission_overhead(1, R11) == 1


def test_an_override_caps_the_forward_and_is_clamped_to_what_the_server_admits():
    capped = rules.longest_forward(-1, max_req_input_len=40954, override=16384)
    assert (capped.tokens, capped.prompt, capped.scheduler_tokens, capped.capped) == (16384, 16384, 40953, True)
    clamped = rules.longest_forward(-1, max_req_input_len=40954, override=99999)
    assert (clamped.tokens, clamped.capped) == (40953, False) and "longer than the longest prompt" in clamped.note
    longer = rules.longest_forward(8192, max_req_input_len=40954, override=12345)
    assert (longer.tokens, longer.prompt, longer.capped) == (8192, 12345, False)  # chunked: still one full chunk
    assert rules.longest_forward(8192, max_req_input_len=40954, override=4000).capped


def test_far_above_a_chunk_only_with_chunking_off_and_no_cap():
    off = rules.longest_forward(-1, max_req_input_len=40954)
    assert off.far_above_reference() == pytest.approx(40953 / 8192)
    message = rules.far_above_message(off)
    assert "one forward of 40953 tokens, 5.0x the 8192-token chunk" in message
    assert "SGLANG_CP_SYMM_WARMUP_TOKENS" in message
    assert rules.far_above_message(rules.longest_forward(-1, max_req_input_len=16001)) is None  # 1.95x
    assert rules.far_above_message(rules.longest_forward(-1, max_req_input_len=40954, override=16384)) is None
    assert rules.far_above_message(rules.longest_forward(8192, max_req_input_len=40954)) is None


def test_a_capped_warmup_says_how_much_growth_it_leaves():
    shape = presets.load_shape("qwen3-30b-a3b", attn_tp_size=2)  # 5120 B a row: k, v 512 B, hidden 4096 B
    capped = rules.longest_forward(-1, max_req_input_len=40954, override=16384)
    left = alloc.growth_left_by_cap(capped, 2, shape)
    assert left == (40954 - 16384) * 5120  # 40953 tokens pad to 40954 rows across 2 CP ranks
    most = alloc.capped_growth_bound(capped, 2, shape)
    message = alloc.capped_message(capped, left, watchdog_on=True, most=most)
    assert "forwards of 16385-40953 tokens need 120.0 MiB more CP buffers at once than the warm-up reached" in message
    assert "so the symmetric pool may still grow at run time by at least that" in message
    assert f"by up to {most[0] / 2**20:.1f} MiB in {most[1]} growth(s) if such lengths arrive in rising order" in message
    assert "the watchdog stays on" in message
    assert "go unreported" in alloc.capped_message(capped, left, watchdog_on=False)
    held = alloc.capped_message(capped, left, True, most, held_by="the symmetric pre-allocation")
    assert "the symmetric pre-allocation holds them, so the pool does not grow while it has room" in held
    assert "rising order" not in held
    assert alloc.growth_left_by_cap(rules.longest_forward(-1, max_req_input_len=40954), 2, shape) == 0
    assert alloc.capped_growth_bound(rules.longest_forward(-1, max_req_input_len=40954), 2, shape) == (0, 0)


def test_segments_and_the_rising_order_worst_case_follow_the_caching_allocator():
    mib = 1 << 20
    assert [alloc.segment_for(b) for b in (1, mib, mib + 1, 10 * mib - 1, 10 * mib, 21 * mib + 5)] == \
        [2 * mib, 2 * mib, 20 * mib, 20 * mib, 10 * mib, 22 * mib]
    # no warm-up, a sweep to 32768 latent-KV rows (1152 B): 20 MiB, then 22, 24, ... 36 MiB (the small 2 MiB
    # segment comes on top): 10 growths, as measured on an H200 without the warm-up
    assert alloc.rising_growth(0, 32768 * 1152) == (sum(range(20, 37, 2)) * mib, 9)
    assert alloc.rising_growth(8192 * 1152, 32761 * 1152) == (sum(range(22, 37, 2)) * mib, 8)  # from a 20 MiB segment
    assert alloc.rising_growth(32768 * 1152, 32768 * 1152) == (0, 0) and alloc.rising_growth(0, mib) == (0, 0)
    k_only = alloc.ModelShape("k", {"k": 1152})
    capped = rules.longest_forward(-1, context_len=32768, override=8192)
    assert alloc.capped_growth_bound(capped, 1, k_only) == alloc.rising_growth(8192 * 1152, 32761 * 1152)


def test_context_length_from_a_plain_config_only():
    assert rules.context_from_config(presets.PRESETS["qwen3-30b-a3b"]) == 40960
    assert rules.context_from_config({"max_position_embeddings": 4096, "rope_scaling": {"factor": 4}}) is None
    assert rules.context_from_config({"text_config": {"max_position_embeddings": 8192}}) == 8192
    assert rules.context_from_config({}) is None


@pytest.mark.parametrize("kwargs,needle", [
    (dict(chunked_prefill_size=-1), "chunked prefill is off"),
    (dict(chunked_prefill_size=8192, max_req_input_len=1), "admits no prompt"),
    (dict(chunked_prefill_size=32, page_size=64), "smaller than page_size"),
])
def test_impossible_arguments_say_which_and_why(kwargs, needle):
    with pytest.raises(rules.SizingError, match=needle):
        rules.longest_forward(**kwargs)


@pytest.mark.parametrize("tokens,cp,rows", [(1, 1, 1), (13, 2, 14), (16, 8, 16), (17, 8, 24), (8191, 3, 8193)])
def test_cp_rows_pad_every_share_to_the_longest(tokens, cp, rows):
    assert rules.cp_rows(tokens, cp) == rows


def test_shapes_of_the_documented_models():
    ds = presets.load_shape("deepseek-v3.2")
    assert ds.gathers == {"latent_kv": 576 * 2, "indexer_key": 132, "hidden_states": 7168 * 2}
    assert presets.load_shape("deepseek-v3.2", "fp8_e4m3").gathers["latent_kv"] == 576
    qwen = presets.load_shape("qwen3-30b-a3b", attn_tp_size=2)
    assert qwen.gathers["k"] == qwen.gathers["v"] == 2 * 128 * 2
    assert presets.load_shape("qwen3-30b-a3b", attn_tp_size=8).gathers["k"] == 128 * 2  # at least one head


def test_shape_from_a_config_file_and_the_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"text_config": dict(presets.PRESETS["qwen3-235b-a22b"])}))
    assert presets.load_shape(str(tmp_path)).gathers["hidden_states"] == 4096 * 2
    with pytest.raises(rules.SizingError, match="neither a preset"):
        presets.load_shape(str(tmp_path / "missing"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(rules.SizingError, match="not a readable JSON"):
        presets.load_shape(str(tmp_path / "bad.json"))
    with pytest.raises(rules.SizingError, match="cannot read the attention shape"):
        alloc.shape_from_config({"num_attention_heads": 8})
    with pytest.raises(rules.SizingError, match="unknown KV dtype"):
        presets.load_shape("qwen3-30b-a3b", "int3")


def test_short_prompts_sit_where_a_buffer_crosses_the_small_segment_limit():
    kv = alloc.ModelShape("latent", {"latent_kv": 1152})
    assert alloc.small_pool_tokens(kv, 1, 8192) == [910]  # 910 rows * 1152 B <= 1 MiB < 911 rows
    assert 910 * 1152 <= alloc.SMALL_ALLOCATION_BYTES < 911 * 1152
    two = alloc.small_pool_tokens(kv, 2, 8192)
    assert two == [1820, 910] and all(t % 2 == 0 for t in two)  # the staged send share crosses at 2x
    assert alloc.small_pool_tokens(kv, 2, 1000) == [910]  # never as long as the longest prompt
    wide = alloc.ModelShape("wide", {"h": 600_000})
    assert alloc.small_pool_tokens(wide, 4, 8192) == []  # at 8 tokens (2 per rank) every buffer is already large
    assert alloc.small_pool_tokens(alloc.ModelShape("w", {"h": 100_000}), 4, 8192) == [40, 8]
    with pytest.raises(rules.SizingError):
        alloc.small_pool_tokens(kv, 0, 10)


def test_cp_need_counts_every_gather_and_the_staged_send_share():
    need = alloc.cp_need(8192, 2, presets.load_shape("qwen3-30b-a3b", attn_tp_size=2))
    assert need.rows == 8192 and need.per_gather == {"k": 4 * MIB, "v": 4 * MIB, "hidden_states": 32 * MIB}
    assert need.total(send=False) == 40 * MIB and need.total(send=True) == 60 * MIB


def test_the_warmups_reservation_in_whole_segments():
    latent = alloc.ModelShape("latent", {"latent_kv": 1152})
    # 131065 rows: one 144 MiB segment; the 910-token prompt's 1 MiB buffer: one 2 MiB small segment
    assert alloc.warmup_reservation(131065, [910], 1, latent) == (144 + 2) * MIB
    assert alloc.warmup_reservation(8192, [910], 1, latent) == (20 + 2) * MIB  # 9 MiB: a 20 MiB segment
    qwen = presets.load_shape("qwen3-30b-a3b", attn_tp_size=2)  # k, v 512 B a row, hidden 4096 B
    # 8192 rows: k and v 4 MiB each share one 20 MiB segment, hidden 32 MiB its own; at 256 tokens k, v (128 KiB
    # each) and hidden (1 MiB) fit one small segment
    assert alloc.warmup_reservation(8192, [4096, 2048, 512, 256], 2, qwen) == (20 + 32 + 2) * MIB
    assert alloc.reserved_for([]) == 0 and alloc.reserved_for([MIB, MIB, MIB]) == 2 * 2 * MIB


@pytest.mark.parametrize("release,gib,holds", [
    ("0.5.12", 16, True),  # large
    ("0.5.12", None, True),  # ok: 4 GiB hold 8192 tokens' 40 MiB
    ("0.5.8", None, False),  # no-prealloc
    ("0.5.12", 0, False),  # off
    ("0.5.11", None, False),  # not-used-by-cp
    ("0.5.12", 0.01, False),  # too-small
])
def test_the_expected_growth_is_nothing_where_the_preallocation_holds_the_buffers(release, gib, holds):
    qwen = presets.load_shape("qwen3-30b-a3b", attn_tp_size=2)
    forward = rules.longest_forward(8192, max_req_input_len=40954)
    sized = alloc.size_pool(forward, 2, qwen, False, Release.parse(release), gib, plugin_on=True)
    assert sized.holds is holds
    reserved = alloc.warmup_reservation(forward.tokens, list(sized.short_prompts), 2, qwen)
    assert sized.growth_bytes == (0 if holds else reserved) and reserved > 0


@pytest.mark.parametrize("release,gib,need,plugin,state", [
    ("0.5.8", None, 1 << 30, True, "no-prealloc"),
    ("0.5.11", 0, 1 << 30, True, "off"),
    ("0.5.11", None, 1 << 30, True, "not-used-by-cp"),
    ("0.5.12", None, 5 << 30, True, "too-small"),
    ("0.5.12", 16, 1 << 30, True, "large"),
    ("0.5.12", None, 3 << 30, True, "ok"),
    ("0.5.11", None, 5 << 30, False, "too-small"),  # plugin off: CP buffers come from the TP pre-allocation
])
def test_prealloc_verdict(release, gib, need, plugin, state):
    verdict = alloc.prealloc_verdict(Release.parse(release), gib, need, plugin)
    assert verdict["state"] == state
    if state == "too-small":
        assert "SGLANG_SYMM_MEM_PREALLOC_GB_SIZE=" in verdict["message"]


@pytest.mark.parametrize("raw,gib", [
    (None, 4),  # unset: sglang's server arguments set 4
    ("8", 8), (" 2 ", 2), ("+3", 3),  # int() as sglang's EnvInt parses it
    ("0", 0), ("-1", -1), ("", -1),  # set: no default of 4 any more
    ("2.5", -1), ("1e1", -1), ("four", -1),  # int() refuses: sglang takes its default -1
])
def test_the_preallocation_is_read_by_sglangs_rule(raw, gib):
    """``SGLANG_SYMM_MEM_PREALLOC_GB_SIZE`` as sglang reads it (``EnvInt(-1)``; 4 only when unset; nothing at 0 or
    below), for the engine and the doctor alike; the verdict follows (0.5.12+: the pre-allocation serves the CP
    buffers)."""
    assert alloc.prealloc_gib_from(raw) == gib
    verdict = alloc.prealloc_verdict(Release.parse("0.5.12"), alloc.prealloc_gib_from(raw), 2 << 30, True)
    assert (verdict["state"] == "off") is (gib <= 0), verdict
    assert (verdict["state"] == "too-small") is (0 < gib < 2), verdict
