"""The status line's first words say exactly what happened, on real releases (fresh interpreters).

- everything that needed a change got it: ``applied``;
- some targets changed, one left as it was: ``partly applied``, with that target's reason;
- nothing changed (an NCCL newer than the verified table held it all back): ``nothing applied``, with the reason;
- nothing needed (every target fixed upstream): ``nothing applied: every target is already fixed upstream``;
- a racy NCCL: ``guarded``, with the reason and every CP gather the race guard holds.
Unless a test says otherwise the NCCL is 2.30.7, where nothing races.
"""

import json

import pytest

from conftest import last_line, nccl, run_python

pytestmark = pytest.mark.release

CP_UTILS = "sglang.srt.layers.utils.cp_utils"
ON = {"SGLANG_CP_SYMM": "1", **nccl("2.30.7")}
LINE = f"""
    import json, {CP_UTILS} as m
    import sglang.srt.distributed.device_communicators.pynccl_allocator
    %s
    import sglang_cp_symm as s
    from sglang_cp_symm.engine.report import status_line
    from sglang_cp_symm.engine import activation
    s.patch()
    print(json.dumps([s.status()["outcome"], status_line(activation.current())]))
"""
# A later release that changed the KV gather's shape: the rewrite must leave it alone (and say so).
CHANGED_KV = """
    def cp_all_gather_reorganized_into_tensor_kv_cache(input_tensor, total_len, cp_size, forward_batch, stream):
        return input_tensor
    m.cp_all_gather_reorganized_into_tensor_kv_cache = cp_all_gather_reorganized_into_tensor_kv_cache
"""


def outcome(release: str, prelude: str = "", env: dict | None = None):
    return json.loads(last_line(run_python(release, LINE % prelude, env={**ON, **(env or {})}, fresh=False)))


def test_applied():
    word, line = outcome("0.5.11")
    assert word == "applied" and line.startswith("sglang-cp-symm: applied; sglang 0.5.11, mode on;")


def test_partly_applied_names_what_was_left_and_why():
    """0.5.11 (its plugin loader is not called here, so patch() applies): the pool fix applies, the KV gather
    of a changed shape is left alone."""
    word, line = outcome("0.5.11", CHANGED_KV)
    assert word.startswith("partly applied: cp_utils.reorganized_kv_cache skipped: ")
    assert line.startswith("sglang-cp-symm: partly applied; sglang 0.5.11")
    assert "pool.attention_cp_registration=patched (_pool_id)" in line


def test_guarded_on_a_racy_nccl_says_why_and_what_it_holds():
    word, line = outcome("0.5.11", env=nccl("2.29.7"))
    assert word.startswith("guarded: NCCL 2.29.7 symmetric kernels race") and "ALLOW_NCCL_RACE=1" in word
    assert "held: cp_utils.reorganized, cp_utils.reorganized_kv_cache, cp_utils.rerange_output, " \
           "pool.attention_cp_registration" in word
    assert line.startswith("sglang-cp-symm: guarded; sglang 0.5.11")


def test_nothing_applied_on_an_unverified_nccl_says_why():
    word, line = outcome("0.5.11", env=nccl("2.33.0"))
    assert word.startswith("nothing applied: ") and "held back" in word and "unverified" in word
    assert line.startswith("sglang-cp-symm: nothing applied; sglang 0.5.11")


def test_nothing_to_apply_where_upstream_has_it_all():
    word, _ = outcome("0.5.12")
    assert word == "nothing applied: every target is already fixed upstream or absent in this release"
