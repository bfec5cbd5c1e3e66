"""Stage A: the target register is consistent, and the release parser reads real version strings."""

import pytest

from sglang_cp_symm.targets import (
    FIRST_SUPPORTED,
    LAST_SUPPORTED,
    POOL_FIX,
    TARGETS,
    is_supported,
    needs_output_patch,
    targets_for,
)
from sglang_cp_symm.releases import Release


@pytest.mark.parametrize(
    "text,expected",
    [("0.5.10", (0, 5, 10)), ("0.5.10.post1", (0, 5, 10)), ("0.5.23rc0", (0, 5, 23)), ("v0.5.11.dev3+g1a2b", (0, 5, 11))],
)
def test_release_parse(text, expected):
    assert Release.parse(text) == expected


def test_release_parse_rejects_garbage():
    with pytest.raises(ValueError):
        Release.parse("latest")


def test_every_target_is_well_formed():
    names = [t.name for t in TARGETS]
    assert len(names) == len(set(names))
    for t in TARGETS:
        assert t.first <= t.last
        assert FIRST_SUPPORTED <= t.first and t.last <= LAST_SUPPORTED
        assert t.fixed_by and t.drop_when and t.output and t.input and t.group


@pytest.mark.parametrize(
    "release,patched",
    [
        ("0.5.6", {"nsa.reorganized_tp"}),
        ("0.5.8", {"nsa.reorganized_tp", "nsa.rerange_output_tp"}),
        ("0.5.9", set()),
        ("0.5.10", {"cp_utils.reorganized", "cp_utils.reorganized_kv_cache"}),
        ("0.5.11", {"cp_utils.reorganized_kv_cache"}),
        ("0.5.12", set()),
        ("0.5.19", set()),
        ("0.5.23", set()),
    ],
)
def test_output_patch_exactly_where_upstream_lacks_it(release, patched):
    assert {t.name for t in needs_output_patch(Release.parse(release))} == patched


def test_pool_fix_only_before_pr_21392():
    assert all(POOL_FIX.applies_to(Release.parse(v)) for v in ("0.5.6", "0.5.8", "0.5.9", "0.5.10", "0.5.11"))
    assert POOL_FIX.group_getter(Release.parse("0.5.8")) == "get_attention_tp_group"
    assert POOL_FIX.group_getter(Release.parse("0.5.9")) == "get_attention_cp_group"
    assert not POOL_FIX.applies_to(Release.parse("0.5.12"))


def test_support_window():
    assert not is_supported(Release.parse("0.5.5")) and not is_supported(Release.parse("0.5.24"))
    assert is_supported(Release.parse("0.5.6")) and is_supported(Release.parse("0.5.8"))
    assert is_supported(Release.parse("0.5.9"))
    assert {t.name for t in targets_for(Release.parse("0.5.9"))} == {"nsa.reorganized", "nsa.rerange_output"}
    assert {t.name for t in targets_for(Release.parse("0.5.23"))} == {"cp.zigzag", "cp.interleave", "cp.interleave_gather"}
