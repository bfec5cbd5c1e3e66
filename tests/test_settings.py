"""Stage A: the environment switches (pure Python, no sglang)."""

import pytest

from sglang_cp_symm.settings import ENABLE, STRICT, read_settings


def test_off_by_default():
    s = read_settings({})
    assert (s.enabled, s.strict, s.problems) == (False, False, ())


@pytest.mark.parametrize("value", ["1", "true", "TRUE", " yes ", "on"])
def test_accepted_on_values(value):
    assert read_settings({ENABLE: value}).enabled


@pytest.mark.parametrize("value", ["", "0", "false", "No", "off"])
def test_accepted_off_values(value):
    s = read_settings({ENABLE: value})
    assert not s.enabled and not s.problems


@pytest.mark.parametrize("value", ["2", "maybe", "enable", "y"])
def test_bad_value_is_one_clear_message_and_stays_off(value):
    s = read_settings({ENABLE: value})
    assert not s.enabled
    assert len(s.problems) == 1
    message = s.problems[0]
    assert ENABLE in message and repr(value) in message and "1/true/yes/on" in message


def test_strict_is_parsed_and_its_bad_value_reported():
    assert read_settings({ENABLE: "1", STRICT: "1"}).strict
    s = read_settings({STRICT: "sure"})
    assert not s.strict and STRICT in s.problems[0]


def test_warmup_and_watchdog_are_on_by_default_and_can_be_turned_off():
    from sglang_cp_symm.settings import WARMUP, WATCHDOG

    s = read_settings({ENABLE: "1"})
    assert s.warmup and s.watchdog and s.warmup_tokens is None
    s = read_settings({ENABLE: "1", WARMUP: "0", WATCHDOG: "off"})
    assert not s.warmup and not s.watchdog and not s.problems


@pytest.mark.parametrize("value,tokens", [("16384", 16384), (" 512 ", 512), ("auto", None), ("", None)])
def test_warmup_tokens(value, tokens):
    from sglang_cp_symm.settings import WARMUP_TOKENS

    s = read_settings({WARMUP_TOKENS: value})
    assert s.warmup_tokens == tokens and not s.problems


@pytest.mark.parametrize("value", ["0", "-5", "8k", "1e4"])
def test_bad_warmup_tokens_is_one_message_and_the_servers_length_is_used(value):
    from sglang_cp_symm.settings import WARMUP_TOKENS

    s = read_settings({WARMUP_TOKENS: value})
    assert s.warmup_tokens is None and len(s.problems) == 1
    assert WARMUP_TOKENS in s.problems[0] and repr(value) in s.problems[0] and "positive whole number" in s.problems[0]


def test_a_bad_value_keeps_a_default_on_switch_on():
    from sglang_cp_symm.settings import WARMUP

    s = read_settings({WARMUP: "sometimes"})
    assert s.warmup and "Keeping its default (on)" in s.problems[0]
