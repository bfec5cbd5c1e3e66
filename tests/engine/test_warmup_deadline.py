"""Stage A: the warm-up's deadline, from SGLANG_CP_SYMM_WARMUP_TIMEOUT or sglang's own timeouts (pure functions).

The figures are sglang's (sglang_cp_symm/engine/warmup_fanout.py cites where): its own warm-up request budget,
``SGLANG_WARMUP_TIMEOUT`` or 600 s (1800 s on a PD prefill server), never below 1.5 x ``--watchdog-timeout``.
The bound on the start that follows from it is observed, not re-derived: on a real release's named warm-up runner,
with one DP rank that never answers (stage B, the last release of the proof set).
"""

import json
from pathlib import Path

import pytest

from conftest import PROOF_RELEASES, ROOT, last_line, run_python
from sglang_cp_symm.engine import warmup_fanout as wd
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


# A DP rank that answers nothing: not its prompt, not the abort, not its completion marker, and whose request
# unwinds slowly when cancelled (it swallows the first cancellation and takes 3 s to end), the worst case for each
# wait the warm-up makes. The tokenizer manager stands in for the ranks (warmup_rehearsal.RecordingTokenizerManager:
# a server's DP ranks need GPUs); sglang's named warm-up runner, its ServerArgs and its request class are the
# release's own.
STALLED = """
import asyncio, json, time, warnings
warnings.filterwarnings("ignore")
import warmup_harness as h
from sglang_cp_symm.engine import activation
from sglang.srt.entrypoints import warmup as _runner  # imported before the clock starts, as in a running server
from sglang.srt.managers import io_struct as _requests
h.activate()


class WorstRank(h.RecordingTokenizerManager):
    async def generate_request(self, obj, request=None):
        if self._rank_of(obj) != self.dead_rank:
            async for out in super().generate_request(obj, request):
                yield out
            return
        self.requests.append(obj)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(obj.rid)
            await asyncio.sleep(3)  # a second cancellation (asyncio.run's own, at the end) ends it
            raise
        yield {}


args = h.cp_server_args(chunked_prefill_size=8192, dp_size=2, enable_dp_attention=True)
out = {}
for name, manager in (("stalled", h.RecordingTokenizerManager(args, stall_rank=1)),
                      ("worst", WorstRank(args, dead_rank=1))):
    h.reset_warmup()
    started = time.monotonic()
    h.run_named_warmup(manager)  # sglang's lifespan awaits this, then reports ready
    out[name] = {"elapsed": time.monotonic() - started, "result": activation.current().warmup.result,
                 "cancelled": manager.cancelled}
h.emit(out)
"""


@pytest.mark.release
def test_a_stalled_rank_meets_the_deadline_and_the_worst_rank_the_bound_the_status_states():
    release = PROOF_RELEASES[-1]
    env = {"PYTHONPATH_PREPEND": str(ROOT / "tests" / "stubs" / "cuda_only"), "SGLANG_CP_SYMM": "1",
           "SGLANG_CP_SYMM_WARMUP_TIMEOUT": "1"}
    # forked from the release's fork server: the deadline is what is observed, not the interpreter's start
    got = json.loads(last_line(run_python(release, STALLED, cwd=Path(__file__).resolve().parent, env=env,
                                          fresh=False)))
    stalled, worst = got["stalled"], got["worst"]
    for case in (stalled, worst):
        deadline = case["result"]["deadline"]
        assert deadline["seconds"] == 1 and case["result"]["timed_out"], case["result"]
        # never released before the deadline, never held past the bound the status line and doctor state
        assert deadline["seconds"] <= case["elapsed"] <= deadline["bound_s"], (case["elapsed"], deadline)
    # a rank that answers its aborts: its prompt ends at the deadline, only its marker is given the grace
    deadline = stalled["result"]["deadline"]
    assert stalled["elapsed"] < deadline["seconds"] + 2 * deadline["grace_s"], stalled
    assert stalled["result"]["markers"] == {"0": "done", "1": "unanswered"} and stalled["cancelled"] == []
    # the worst rank: each wait runs out (its abort, its cancellation, its marker), and the bound still holds
    assert "DP rank 1 on its 4096-token prompt (no answer to the abort)" in worst["result"]["error"]
    assert worst["result"]["markers"] == {"0": "done", "1": "unanswered"}
    assert len(worst["cancelled"]) == 2  # its prompt and its marker, each cancelled after its grace
    assert worst["elapsed"] > worst["result"]["deadline"]["seconds"] + 2 * worst["result"]["deadline"]["grace_s"]


def test_the_switch_is_whole_seconds_from_1_to_a_day():
    assert read_settings({"SGLANG_CP_SYMM_WARMUP_TIMEOUT": "900"}).warmup_timeout_s == 900
    for bad in ("0", "-5", "1.5", "86401", "ten"):
        settings = read_settings({"SGLANG_CP_SYMM_WARMUP_TIMEOUT": bad})
        assert settings.warmup_timeout_s is None and "SGLANG_CP_SYMM_WARMUP_TIMEOUT" in settings.problems[0]


@pytest.mark.parametrize("raw,seconds", [(None, None), ("", None), ("ten", None), ("1200", 1200.0), (" 90.5 ", 90.5),
                                         ("-1", -1.0), ("0", 0.0)])
def test_sglangs_variable_is_read_by_its_own_rule(raw, seconds):
    """EnvFloat(-1): unset, empty or not a float is sglang's default, which the deadline reads as unset; any float is
    taken (0 or less: unset too)."""
    environ = {} if raw is None else {"SGLANG_WARMUP_TIMEOUT": raw}
    assert wd.sglang_warmup_timeout(environ) == seconds
    if seconds is None or seconds <= 0:
        assert wd.warmup_deadline(None, wd.sglang_warmup_timeout(environ)).seconds == wd.SGLANG_WARMUP_BUDGET_S
