"""Stage A: the environment switches (pure Python, no sglang)."""

import pytest

from sglang_cp_symm.engine.settings import ENABLE, STRICT, read_settings


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
    from sglang_cp_symm.engine.settings import WARMUP, WATCHDOG

    s = read_settings({ENABLE: "1"})
    assert s.warmup and s.watchdog and s.warmup_tokens is None
    s = read_settings({ENABLE: "1", WARMUP: "0", WATCHDOG: "off"})
    assert not s.warmup and not s.watchdog and not s.problems


@pytest.mark.parametrize("value,tokens", [("16384", 16384), (" 512 ", 512), ("auto", None), ("", None)])
def test_warmup_tokens(value, tokens):
    from sglang_cp_symm.engine.settings import WARMUP_TOKENS

    s = read_settings({WARMUP_TOKENS: value})
    assert s.warmup_tokens == tokens and not s.problems


@pytest.mark.parametrize("value", ["0", "-5", "8k", "1e4", "1_000", "\u0661\u0662", "\u00b2", "16777217", "+512"])
def test_a_token_count_is_ascii_digits_within_its_bound(value):
    """Arabic-Indic digits and superscripts pass str.isdigit(), "1_000" passes int(): none is a count."""
    from sglang_cp_symm.engine.settings import MAX_WARMUP_TOKENS, WARMUP_TOKENS

    s = read_settings({WARMUP_TOKENS: value})
    assert s.warmup_tokens is None and len(s.problems) == 1
    assert WARMUP_TOKENS in s.problems[0] and f"from 1 to {MAX_WARMUP_TOKENS}" in s.problems[0]


def test_the_bound_itself_is_accepted():
    from sglang_cp_symm.engine.settings import MAX_WARMUP_TOKENS, WARMUP_TOKENS

    assert read_settings({WARMUP_TOKENS: str(MAX_WARMUP_TOKENS)}).warmup_tokens == MAX_WARMUP_TOKENS


@pytest.mark.parametrize("name", ["SGLANG_CP_SYMM", "SGLANG_CP_SYMM_WARMUP_TOKENS", "SGLANG_CP_SYMM_REPORT_DIR"])
def test_a_rejected_value_is_echoed_at_most_60_characters(name, tmp_path):
    secret = "x" * 59 + "SECRET-TAIL" + "\x1b[2J"
    value = str(tmp_path / "file") if name.endswith("REPORT_DIR") else secret
    if name.endswith("REPORT_DIR"):
        (tmp_path / "file").write_text("")
        value = str(tmp_path / "file" / secret)
    message = read_settings({name: value}).problems[0]
    assert "SECRET-TAIL" not in message and "\x1b" not in message
    assert "..." in message


def test_the_report_dir_must_be_a_writable_folder(tmp_path):
    from sglang_cp_symm.engine.settings import REPORT_DIR, default_report_dir

    assert read_settings({REPORT_DIR: str(tmp_path)}).report_dir == str(tmp_path)
    to_make = tmp_path / "a" / "b"
    s = read_settings({REPORT_DIR: str(to_make)})  # can be made: accepted, made only when a rank writes
    assert s.report_dir == str(to_make) and not s.problems and not to_make.exists()
    (tmp_path / "plain").write_text("")
    s = read_settings({REPORT_DIR: str(tmp_path / "plain")})
    assert s.report_dir == default_report_dir() and "is not a folder" in s.problems[0]
    s = read_settings({REPORT_DIR: str(tmp_path / "plain" / "below")})
    assert s.report_dir == default_report_dir() and "cannot be made" in s.problems[0]


def test_an_unwritable_report_dir_is_refused(tmp_path):
    """A folder of mode 0500 for an ordinary user; for root (who may write there), /proc/sys, which no one may."""
    import os

    from sglang_cp_symm.engine.settings import REPORT_DIR, default_report_dir

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    candidates = [p for p in (str(locked), "/proc/sys") if os.path.isdir(p) and not os.access(p, os.W_OK)]
    if not candidates:
        pytest.skip("no folder here that this user may not write")
    s = read_settings({REPORT_DIR: os.path.join(candidates[0], "records")})
    assert s.report_dir == default_report_dir() and "cannot be made or written" in s.problems[0]
