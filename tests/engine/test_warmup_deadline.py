"""Stage A: the warm-up's deadline, from SGLANG_CP_SYMM_WARMUP_TIMEOUT or sglang's own timeouts (pure functions).

The figures are sglang's (sglang_cp_symm/engine/warmup_deadline.py cites where): its own warm-up request budget,
``SGLANG_WARMUP_TIMEOUT`` or 600 s (1800 s on a PD prefill server), never below 1.5 x ``--watchdog-timeout``.
"""

import pytest

from sglang_cp_symm.engine import warmup_deadline as wd
from sglang_cp_symm.engine.settings import read_settings


@pytest.mark.parametrize("override,env_timeout,watchdog,mode,seconds,needle", [
    (None, None, None, "null", 600, "SGLANG_WARMUP_TIMEOUT unset"),
    (None, -1.0, 300, "null", 600, "sglang's own warm-up budget"),  # sglang's -1: its default
    (None, None, None, "prefill", 1800, "PD prefill server"),
    (None, 1200.0, None, "null", 1200, "SGLANG_WARMUP_TIMEOUT=1200"),
    (None, 120.0, None, "null", 450, "1.5 x --watchdog-timeout 300 s, above SGLANG_WARMUP_TIMEOUT=120 (120 s)"),
    (None, None, 1000, "null", 1500, "1.5 x --watchdog-timeout 1000 s"),
    (5, 1200.0, 1000, "prefill", 5, "SGLANG_CP_SYMM_WARMUP_TIMEOUT=5"),  # the switch replaces all of it
])
def test_the_deadline_and_where_it_came_from(override, env_timeout, watchdog, mode, seconds, needle):
    deadline = wd.warmup_deadline(override, env_timeout, watchdog, mode)
    assert deadline.seconds == seconds and needle in deadline.source


def test_the_start_waits_at_most_the_deadline_plus_stopping_and_markers():
    default = wd.warmup_deadline(None)
    assert default.grace_s == wd.STOP_GRACE_S == 30
    assert default.bound_s == 600 + 2 * 30 + wd.ABORT_ANSWER_S + 2 * wd.UNWIND_S
    short = wd.warmup_deadline(2)
    assert short.grace_s == 2 and short.bound_s == 2 + 2 * 2 + wd.ABORT_ANSWER_S + 2 * wd.UNWIND_S
    assert set(default.describe()) == {"seconds", "source", "grace_s", "bound_s"}


def test_the_switch_is_whole_seconds_from_1_to_a_day():
    assert read_settings({"SGLANG_CP_SYMM_WARMUP_TIMEOUT": "900"}).warmup_timeout_s == 900
    for bad in ("0", "-5", "1.5", "86401", "ten"):
        settings = read_settings({"SGLANG_CP_SYMM_WARMUP_TIMEOUT": bad})
        assert settings.warmup_timeout_s is None and "SGLANG_CP_SYMM_WARMUP_TIMEOUT" in settings.problems[0]


def test_without_sglang_its_variable_is_not_guessed():
    assert wd.sglang_warmup_timeout() is None  # stage A runs without sglang: the default applies
