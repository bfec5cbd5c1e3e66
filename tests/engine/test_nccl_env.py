"""Stage A: NCCL_ALGO and NCCL_SYM_KERNEL as NCCL 2.31+ reads them, and as 2.28-2.30 do not.

The rule (engine/nccl_env.py's docstring; NCCL branch dev 2.31.0a7, src/tuning/cost_model.cc:315-317 and
350-359, parseList at 32-100; the 2.31.2 and 2.32.x binaries carry the same parser, docs/nccl-audit.md):
any non-empty NCCL_ALGO covering AllGather turns AllGather's symmetric kernels off; NCCL_SYM_KERNEL
re-enables the ones it names. 2.28-2.30 pick the symmetric kernel without reading NCCL_ALGO.
"""

import pytest

from sglang_cp_symm.engine import nccl_env

V231, V232, V230 = (2, 31, 2), (2, 32, 6), (2, 30, 7)


@pytest.mark.parametrize("env,off", [
    ({"NCCL_ALGO": "NVLS"}, True),                      # no prefix: every function, AllGather included
    ({"NCCL_ALGO": "ring,tree"}, True),
    ({"NCCL_ALGO": "^Ring"}, True),                     # an exclusion lists an element too: forced
    ({"NCCL_ALGO": "allgather:ring"}, True),
    ({"NCCL_ALGO": "AllGather:Ring"}, True),            # NCCL compares case-insensitively
    ({"NCCL_ALGO": "ring;allreduce:tree"}, True),
    ({"NCCL_ALGO": "allreduce:tree"}, False),           # does not cover AllGather
    ({"NCCL_ALGO": "allreduce:tree;reducescatter:ring"}, False),
    ({"NCCL_ALGO": ""}, False),                         # empty: NCCL's default
    ({"NCCL_ALGO": "  "}, False),
    ({}, False),
    ({"NCCL_ALGO": "ring", "NCCL_SYM_KERNEL": "AllGather_ST"}, False),        # re-enabled by name
    ({"NCCL_ALGO": "ring", "NCCL_SYM_KERNEL": "allgather:AllGather_LL,AllGather_ST"}, False),
    ({"NCCL_ALGO": "ring", "NCCL_SYM_KERNEL": "^AllGather_LL"}, False),       # all but one: others stay
    ({"NCCL_ALGO": "ring", "NCCL_SYM_KERNEL": "^"}, False),                   # '^' alone: every kernel on
    ({"NCCL_ALGO": "ring", "NCCL_SYM_KERNEL": "AllReduce_AGxLL_R"}, True),   # names no AllGather kernel
    ({"NCCL_ALGO": "ring", "NCCL_SYM_KERNEL": "allreduce:AllReduce_AGxLL_R"}, True),
    ({"NCCL_ALGO": "bogus"}, False),                    # NCCL rejects the value: said by effects(), not this
])
def test_allgather_symmetric_off_on_2_31_and_later(env, off):
    for version in (V231, V232):
        effect = nccl_env.algo_effect(env, version)
        assert effect.allgather_off is off, (env, version)
        assert ("AllGather has no symmetric kernel" in effect.effect) is off, (env, version)


@pytest.mark.parametrize("version", [V230, (2, 28, 9), (2, 29, 7), None])
def test_before_2_31_or_unknown_the_rule_does_not_apply(version):
    assert not nccl_env.algo_effect({"NCCL_ALGO": "NVLS"}, version).allgather_off


@pytest.mark.parametrize("version,expected", [
    (V231, "legacy algorithms only for AllGather: on this NCCL (2.31+) AllGather has no symmetric kernel"),
    (V230, "legacy algorithms only; does not keep symmetric kernels off on 2.28-2.30"),
    (None, "legacy algorithms only; on NCCL 2.31+, where it covers AllGather"),
])
def test_the_effect_line_says_what_this_nccl_does(version, expected):
    (effect,) = nccl_env.effects({"NCCL_ALGO": "NVLS"}, version)
    assert effect.effect.startswith(expected)
    assert effect.allgather_off is (version == V231)
    assert not effect.symmetric_off and not effect.defeats_guard  # the race guard's inputs are unchanged


def test_a_value_nccl_rejects_is_one_line_with_a_short_prefix():
    (effect,) = nccl_env.effects({"NCCL_ALGO": "ring;" + "x" * 300}, V231)
    line = effect.line()
    assert "NCCL rejects this value" in line and "prefix" in line and len(line) < 200


@pytest.mark.parametrize("value,error", [
    ("ring;tree", "every entry after the first needs a function prefix"),
    ("sendrecv:ring", "unknown function 'sendrecv'"),
    ("ring,warp", "unknown element 'warp'"),
])
def test_parse_list_rejects_what_nccl_rejects(value, error):
    assert nccl_env.parse_list(value, "allgather", nccl_env.ALGORITHMS)[3] == error


def test_the_last_entry_for_allgather_wins():
    # "ring for all, then allgather: everything but ring" (NCCL's own example shape, cost_model.cc:20-31)
    forced, mode, listed, error = nccl_env.parse_list("ring;allgather:^ring", "allgather", nccl_env.ALGORITHMS)
    assert (forced, mode, listed, error) == (True, "except", {"ring"}, None)


def test_the_guard_inputs_ignore_nccl_algo():
    """What the plan hands the race guard (``settings_that``; 2.28-2.30, where NCCL_ALGO does nothing to it)."""
    found = nccl_env.effects({"NCCL_ALGO": "NVLS"})
    assert nccl_env.settings_that(found, "symmetric_off") is None and nccl_env.settings_that(found, "defeats_guard") is None


@pytest.mark.release
@pytest.mark.parametrize("version,needle", [
    ("2.32.6", "NCCL env    NCCL_ALGO=NVLS: legacy algorithms only for AllGather: on this NCCL (2.31+) AllGather has "
               "no symmetric kernel"),
    ("2.30.7", "NCCL env    NCCL_ALGO=NVLS: legacy algorithms only; does not keep symmetric kernels off on 2.28-2.30"),
])
def test_the_doctor_applies_the_rule_of_the_nccl_it_loads(version, needle):
    """The real doctor on sglang 0.5.11; the loaded NCCL is the libnccl stand-in (no NCCL binary runs here)."""
    from conftest import nccl, run_python

    code = "import sys; sys.argv[1:] = ['doctor']; from sglang_cp_symm.__main__ import main; sys.exit(main(['doctor']))"
    out = run_python("0.5.11", code, env={"SGLANG_CP_SYMM": "1", "NCCL_ALGO": "NVLS", **nccl(version)}).stdout
    assert needle in out, out


@pytest.mark.parametrize("nccl,defeats", [((2, 28, 9), False), ((2, 29, 7), True), ((2, 30, 7), True), (None, True)])
def test_a_forced_kernel_defeats_the_guard_from_2_29_on_and_where_nccl_is_unknown(nccl, defeats):
    """On 2.28 ``NCCL_SYM_KERNEL`` only narrows the choice among registered buffers and ``NCCL_SYM_NOWIN_ENABLE``
    does not exist (the module docstring's source lines): the guard holds there. An NCCL that was not read may be
    2.29+, so the guard is then taken as defeated."""
    for env in ({"NCCL_SYM_KERNEL": "AllGather_ST"}, {"NCCL_SYM_NOWIN_ENABLE": "1"}):
        found = nccl_env.effects(env, nccl)
        assert (nccl_env.settings_that(found, "defeats_guard") is not None) is defeats, (env, found)


#: Values of an integer parameter by class: signs, bases (0x, leading 0), white space before and after, a tail NCCL
#: ignores, no digit, the 64-bit bounds and past them, words, non-ASCII digits, long values.
INT_VALUES = ["", "0", "1", "2", "-1", "+1", "-0", "00", "01", "010", "08", "09", "0x", "0x0", "0x1", "0X1F", "0xg",
              "-0x10", " 0", "\t1", "\n0", " 0 ", "0 ", "1 ", "  ", " ", "1abc", "0abc", "abc", "true", "false", "yes",
              "no", "on", "off", "1.5", "0.9", "1e3", "+", "-", "--1", "+-1", " + 1", "9223372036854775807",
              "9223372036854775808", "-9223372036854775808", "-9223372036854775809", "99999999999999999999999",
              "0x7fffffffffffffff", "0x8000000000000000", "٣", "１", "1" * 300, "0" * 300 + "1", "1" * 5000,
              "0" * 5000 + "7", "-" + "9" * 5000]


def test_integer_parameters_are_read_as_ncclloadparam_reads_them_with_the_c_librarys_strtoll():
    """``nccl_int`` against the C library's own ``strtoll(str, NULL, 0)`` and ``errno``, as ``ncclLoadParam`` calls
    them (src/misc/param.cc v2.28.9-1:82-90): unset or empty, or errno set, is the default."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.strtoll.restype, libc.strtoll.argtypes = ctypes.c_longlong, [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    for default in (0, 1):
        for raw in INT_VALUES:
            ctypes.set_errno(0)
            value = libc.strtoll(raw.encode(), None, 0)
            expected = default if not raw or ctypes.get_errno() else value
            assert nccl_env.nccl_int(raw, default) == expected, (raw, default)


@pytest.mark.parametrize("raw,off", [("0", True), ("1", False), ("2", False), ("-1", False), ("0x0", True),
                                     ("0x1", False), ("00", True), ("true", True), ("1abc", False), ("  ", True),
                                     ("99999999999999999999", False), ("", False)])
def test_windows_are_off_exactly_where_nccl_reads_win_enable_as_0(raw, off):
    """``comm->symmetricSupport = ... && ncclParamWinEnable() && ...`` (src/init.cc v2.28.9-1:1376): any value NCCL
    reads as 0 turns windows off, any other keeps them on, "2" and "0x1" too (which must not turn the guard off)."""
    found = nccl_env.effects({"NCCL_WIN_ENABLE": raw}, (2, 29, 7))
    assert (nccl_env.settings_that(found, "symmetric_off") is not None) is off, (raw, found)


@pytest.mark.parametrize("raw,on", [("1", True), ("0", False), ("2", True), ("0x0", False), ("no", False),
                                    ("00", False), (" 1", True), ("", False)])
def test_symmetric_kernels_outside_windows_exactly_where_nccl_reads_nowin_as_nonzero(raw, on):
    """``needFallback = !ncclParamSymNoWinEnable() && ...`` (src/scheduler/symmetric_sched.cc v2.29.7-1:109)."""
    found = nccl_env.effects({"NCCL_SYM_NOWIN_ENABLE": raw}, (2, 29, 7))
    assert (nccl_env.settings_that(found, "defeats_guard") is not None) is on, (raw, found)
