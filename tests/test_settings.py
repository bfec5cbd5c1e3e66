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
