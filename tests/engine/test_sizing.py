"""Stage A: how long the warm-up's prompts are and what the CP all-gathers need (pure functions, no sglang).

Each rule cites the sglang or PyTorch source it follows (sglang_cp_symm/sizing.py);
tests/test_warmup.py checks the same rules against the real ServerArgs of each release.
"""

import json

import pytest

from sglang_cp_symm.engine import sizing as sz
from sglang_cp_symm.releases import Release

MIB = 1 << 20


@pytest.mark.parametrize("chunk,dp,dp_attention,expected", [
    (8192, 1, False, 8192), (8192, 2, True, 4096), (8192, 2, False, 8192), (8192, 3, True, 2730),
    (-1, 2, True, -1), (None, 1, False, -1),
])
def test_per_dp_chunk_divides_only_under_dp_attention(chunk, dp, dp_attention, expected):
    assert sz.per_dp_chunk(chunk, dp, dp_attention) == expected


def test_max_extend_is_the_chunk_capped_by_the_longest_prompt():
    assert sz.max_extend_tokens(8192) == 8192
    assert sz.max_extend_tokens(8100) == 8100  # a middle chunk extends rem_chunk_tokens, unaligned
    assert sz.max_extend_tokens(8192, max_req_input_len=4001) == 4000  # len >= max_req_input_len is refused
    assert sz.max_extend_tokens(-1, max_req_input_len=131067) == 131066  # chunking off: the whole prompt
    assert sz.max_extend_tokens(-1, context_len=32768) == 32761  # min(ctx - 1, pool - 1) - 5, then minus one


def test_warmup_prompt_reaches_the_full_chunk_even_when_it_is_not_page_aligned():
    assert sz.warmup_prompt_tokens(8192, 64) == 8192  # aligned: one forward of 8192
    assert sz.warmup_prompt_tokens(8100, 64) == 8064 + 8100  # first chunk 8064, the second carries 8100
    assert sz.warmup_prompt_tokens(8100, 64, context_len=10000) == 9993  # capped by the longest prompt
    assert sz.warmup_prompt_tokens(-1, 64, max_req_input_len=20000) == 19999


@pytest.mark.parametrize("kwargs,needle", [
    (dict(chunked_prefill_size=-1), "chunked prefill is off"),
    (dict(chunked_prefill_size=8192, max_req_input_len=1), "accepts no prompt"),
    (dict(chunked_prefill_size=32, page_size=64), "smaller than page_size"),
])
def test_impossible_arguments_say_which_and_why(kwargs, needle):
    with pytest.raises(sz.SizingError, match=needle):
        sz.warmup_prompt_tokens(**kwargs)


@pytest.mark.parametrize("tokens,cp,rows", [(1, 1, 1), (13, 2, 14), (16, 8, 16), (17, 8, 24), (8191, 3, 8193)])
def test_cp_rows_pad_every_share_to_the_longest(tokens, cp, rows):
    assert sz.cp_rows(tokens, cp) == rows


def test_shapes_of_the_documented_models():
    ds = sz.load_shape("deepseek-v3.2")
    assert ds.gathers == {"latent_kv": 576 * 2, "indexer_key": 132, "hidden_states": 7168 * 2}
    assert sz.load_shape("deepseek-v3.2", "fp8_e4m3").gathers["latent_kv"] == 576
    qwen = sz.load_shape("qwen3-30b-a3b", attn_tp_size=2)
    assert qwen.gathers["k"] == qwen.gathers["v"] == 2 * 128 * 2
    assert sz.load_shape("qwen3-30b-a3b", attn_tp_size=8).gathers["k"] == 128 * 2  # at least one head


def test_shape_from_a_config_file_and_the_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"text_config": sz.PRESETS["qwen3-235b-a22b"]}))
    assert sz.load_shape(str(tmp_path)).gathers["hidden_states"] == 4096 * 2
    with pytest.raises(sz.SizingError, match="neither a preset"):
        sz.load_shape(str(tmp_path / "missing"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(sz.SizingError, match="not a readable JSON"):
        sz.load_shape(str(tmp_path / "bad.json"))
    with pytest.raises(sz.SizingError, match="cannot read the attention shape"):
        sz.shape_from_config({"num_attention_heads": 8})
    with pytest.raises(sz.SizingError, match="unknown KV dtype"):
        sz.load_shape("qwen3-30b-a3b", "int3")


def test_short_prompts_sit_where_a_buffer_crosses_the_small_segment_limit():
    kv = sz.ModelShape("latent", {"latent_kv": 1152})
    assert sz.small_pool_tokens(kv, 1, 8192) == [910]  # 910 rows * 1152 B <= 1 MiB < 911 rows
    assert 910 * 1152 <= sz.SMALL_ALLOCATION_BYTES < 911 * 1152
    two = sz.small_pool_tokens(kv, 2, 8192)
    assert two == [1820, 910] and all(t % 2 == 0 for t in two)  # the staged send share crosses at 2x
    assert sz.small_pool_tokens(kv, 2, 1000) == [910]  # never as long as the longest prompt
    wide = sz.ModelShape("wide", {"h": 600_000})
    assert sz.small_pool_tokens(wide, 4, 8192) == []  # at 8 tokens (2 per rank) every buffer is already large
    assert sz.small_pool_tokens(sz.ModelShape("w", {"h": 100_000}), 4, 8192) == [40, 8]
    with pytest.raises(sz.SizingError):
        sz.small_pool_tokens(kv, 0, 10)


def test_cp_need_counts_every_gather_and_the_staged_send_share():
    need = sz.cp_need(8192, 2, sz.load_shape("qwen3-30b-a3b", attn_tp_size=2))
    assert need.rows == 8192 and need.per_gather == {"k": 4 * MIB, "v": 4 * MIB, "hidden_states": 32 * MIB}
    assert need.total(send=False) == 40 * MIB and need.total(send=True) == 60 * MIB


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
    verdict = sz.prealloc_verdict(Release.parse(release), gib, need, plugin)
    assert verdict["state"] == state
    if state == "too-small":
        assert "SGLANG_SYMM_MEM_PREALLOC_GB_SIZE=" in verdict["message"]
