"""Stage B: the warm-up is bounded and never hangs a start, on every release environment there is.

Real here, per release: sglang's named warm-up runner (``execute_warmups``, what the HTTP server's lifespan awaits
before the server reports ready), its resolved ``ServerArgs`` (DP attention 2, attention CP in the release's own
flags), ``ModelConfig``, ``GenerateReqInput``, and, for the KV-admission case, its scheduling code
(``ReleaseScheduler``: ``validate_input_length`` and ``PrefillAdder`` over the real allocator). Stood in: the
tokenizer manager and its transport to the schedulers (``warmup_rehearsal.RecordingTokenizerManager``, which answers
or fails the ways a real one can: a rank whose requests wait in a full queue until aborted, a rank that answers
nothing, a rank whose request raises), and ``sgl_kernel`` (tests/stubs/cuda_only) on 0.5.8-0.5.10.

Each scenario runs with SGLANG_CP_SYMM_WARMUP_TIMEOUT=2 (the grace to stop ranks and for the markers is then 2 s
too), so a hang would show as a test that exceeds its bound. One probe per release runs them all: first, one after
another, those that end early (their times are checked against tight bounds); then the four that wait through the
deadline and its grace (stalled, dead, strict stalled, the engine's first requests), side by side, each in a child
forked from the probe (its own warm-up state, settings and tokenizer manager), which takes the longest one's 8 s
instead of the four's 20 s.
"""

import json
from pathlib import Path

import pytest

from conftest import PROOF_RELEASES as RELEASES, ROOT, last_line, run_python

pytestmark = pytest.mark.release

HERE = Path(__file__).resolve().parent
CUDA_ONLY = str(ROOT / "tests" / "stubs" / "cuda_only")
DEADLINE_S = 2

PROBE = """
import asyncio, io, json, logging, time, warnings
warnings.filterwarnings("ignore")
import warmup_harness as h
from sglang_cp_symm.engine import activation, warmup
from sglang_cp_symm.engine.settings import read_settings
stream = io.StringIO()
handler = logging.StreamHandler(stream)
logging.getLogger("sglang.cp_symm").addHandler(handler)
logging.getLogger("sglang.cp_symm").setLevel(logging.INFO)
h.activate()
DP = dict(chunked_prefill_size=8192, dp_size=2, enable_dp_attention=True)


def scenario(name, args, strict=False, **manager):
    h.reset_warmup()
    stream.seek(0); stream.truncate()
    tm = h.RecordingTokenizerManager(args, **manager)
    started = time.monotonic()
    refused = None
    try:
        h.run_named_warmup(tm)  # sglang's lifespan goes on to serve once this returns
    except warmup.WarmupFailed as exc:
        refused = str(exc)
    elapsed = time.monotonic() - started
    lines = stream.getvalue().splitlines()
    rank = lambda r: [len(x.input_ids) for x in tm.requests if tm._rank_of(x) == r]
    return {"name": name, "elapsed": elapsed, "result": activation.current().warmup.result, "refused": refused,
            "sent": [rank(0), rank(1)], "aborted": tm.aborted, "cancelled": tm.cancelled,
            "left_in_flight": sorted(tm.inflight), "warnings": [l for l in lines if "pool may still grow" in l],
            "plan_lines": [l for l in lines if "warm-up plan:" in l],
            "status": warmup.status_words(activation.current().settings, activation.current().warmup.result),
            "schedules": [(s.tokens, s.admitted, s.result) for s in tm.schedules]}


def in_child(run):
    # run() in a forked child of this probe, started now; its result (or its traceback) comes back by collect().
    # The scenarios that sleep through their deadline run side by side this way: each child has the probe's
    # imports and plugin, and a warm-up state, settings and tokenizer manager of its own.
    import os, traceback
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            data = {"ok": run()}
        except BaseException:
            data = {"failed": traceback.format_exc()[-3000:]}
        with os.fdopen(write, "w") as f:
            f.write(json.dumps(data, default=str))
        os._exit(0)
    os.close(write)
    return pid, read


def collect(started):
    import os
    out = []
    for pid, read in started:
        with os.fdopen(read) as f:
            data = json.loads(f.read() or '{"failed": "the child wrote nothing"}')
        os.waitpid(pid, 0)
        assert "ok" in data, data["failed"]
        out.append(data["ok"])
    return out


def strict(run):
    import os
    os.environ["SGLANG_CP_SYMM_STRICT"] = "1"
    activation.current().applied = read_settings()
    return run()


def engine_first_requests(name, args, **manager):
    # the offline Engine's path: the guard on generate_request makes the first requests wait for the warm-up
    import wrapt
    from sglang.srt.managers.io_struct import GenerateReqInput
    h.reset_warmup()
    cls = h.RecordingTokenizerManager
    original = cls.__dict__["generate_request"]
    installer = activation.current().installer
    wrapt.wrap_function_wrapper(cls, "generate_request", installer.first_request_guard)
    installer._undo["warmup.first_request"] = [lambda: setattr(cls, "generate_request", original)]
    installer.statuses["warmup.first_request"] = "installed"
    tm = cls(args, **manager)

    async def user(i):
        req = GenerateReqInput(input_ids=[1, 2, 3], sampling_params={"max_new_tokens": 1}, rid=f"user-{i}")
        return [out async for out in tm.generate_request(req)]

    async def main():
        return await asyncio.gather(user(0), user(1))

    started = time.monotonic()
    answers = asyncio.run(main())
    return {"name": name, "elapsed": time.monotonic() - started, "result": activation.current().warmup.result,
            "answered": [a[-1]["meta_info"]["finish_reason"]["type"] for a in answers],
            "guard": installer.describe()["warmup.first_request"],
            "restored": cls.__dict__["generate_request"] is original}


# First, one after another in this process, the scenarios that finish early (the first also pays the imports;
# their elapsed times are bounds the tests check, so nothing else runs meanwhile).
dp_args = h.cp_server_args(**DP)
out = [
    scenario("healthy", dp_args, latency_s=0.01),
    scenario("failed rank", dp_args, fail_rank=1, latency_s=0.6),
]
paged = h.cp_server_args(chunked_prefill_size=-1, page_size=64, max_total_tokens=40960)
out.append(scenario("chunking off, pages of 64, the release's scheduler", paged, scheduler=True))
out.append(scenario("the same, the pool not reported", paged, scheduler=True, report_pool=False))
tm = h.RecordingTokenizerManager(paged, scheduler=True)
old = tm.scheduler.schedule(tm.max_req_input_len - 1)
out.append({"name": "the accepted prompt the old plan sent", "schedule": old.__dict__})
# Then the ones that wait through the deadline and the grace after it, side by side, each in a child of its own.
out += collect([
    in_child(lambda: scenario("stalled rank", dp_args, stall_rank=1)),
    in_child(lambda: scenario("dead rank", dp_args, dead_rank=1)),
    in_child(lambda: strict(lambda: scenario("strict, stalled rank", dp_args, stall_rank=1))),
    in_child(lambda: engine_first_requests("engine, stalled rank", dp_args, stall_rank=1)),
])
h.emit(out)
"""

_results: dict = {}


def results(release: str) -> dict:
    if release not in _results:
        env = {"PYTHONPATH_PREPEND": CUDA_ONLY, "SGLANG_CP_SYMM": "1", "SGLANG_CP_SYMM_WARMUP_TIMEOUT": str(DEADLINE_S)}
        done = run_python(release, PROBE, cwd=HERE, timeout=600, env=env, fresh=False)
        _results[release] = {s["name"]: s for s in json.loads(last_line(done))}
    return _results[release]


def bound_s() -> float:
    from sglang_cp_symm.engine.warmup_fanout import warmup_deadline

    return warmup_deadline(DEADLINE_S).bound_s


@pytest.mark.parametrize("release", RELEASES)
def test_a_healthy_warmup_finishes_well_inside_its_deadline_and_says_its_plan_first(release):
    s = results(release)["healthy"]
    r = s["result"]
    assert r["ran"] and not r["error"] and r["seconds"] < DEADLINE_S  # (the first scenario also pays imports)
    assert s["sent"][0] == s["sent"][1] == [4096, 2048, 1024, 512, 256, 1]
    assert r["markers"] == {"0": "done", "1": "done"} and s["aborted"] == [] and s["left_in_flight"] == []
    assert r["deadline"]["seconds"] == DEADLINE_S and r["deadline"]["source"] == "SGLANG_CP_SYMM_WARMUP_TIMEOUT=2"
    [line] = s["plan_lines"]
    assert "warm-up plan: longest forward 4096 tokens (chunked_prefill_size 4096 per DP rank)" in line
    assert "CP buffers 24.0 MiB at most at once" in line and "deadline 2 s" in line
    assert s["status"].startswith("done in ") and "longest forward 4096 tokens" in s["status"]


@pytest.mark.parametrize("release", RELEASES)
def test_a_stalled_rank_the_deadline_fires_the_others_stop_and_the_server_goes_on(release):
    s = results(release)["stalled rank"]
    r = s["result"]
    assert DEADLINE_S <= s["elapsed"] < bound_s() and s["refused"] is None  # execute_warmups returned
    assert r["timed_out"] and not r["ran"] and "DP rank 1 on its 4096-token prompt" in r["error"]
    assert s["sent"][0] == [4096, 2048, 1024, 512, 256, 1] and s["sent"][1] == [4096, 1]  # nothing more to rank 1
    stalled = [rid for rid in s["aborted"] if rid.startswith("cp-symm-warmup-1-0-")]
    assert len(stalled) == 1 and r["ranks"]["1"]["aborted"] == stalled  # its queued prompt was aborted
    assert any(rid.startswith("cp-symm-warmup-done-1-") for rid in s["aborted"])  # and its unanswered marker
    assert r["markers"]["0"] == "done" and r["markers"]["1"] == "unanswered"
    assert s["left_in_flight"] == [] and s["cancelled"] == []  # every abort was answered: nothing left behind
    [warning] = s["warnings"]
    assert "did not finish within its 2 s deadline (SGLANG_CP_SYMM_WARMUP_TIMEOUT=2), still waiting: DP rank 1" in warning
    assert "The server starts anyway; the symmetric pool may still grow at run time" in warning
    assert s["status"].startswith("timed out after")


@pytest.mark.parametrize("release", RELEASES)
def test_a_rank_that_answers_nothing_cannot_hold_the_start(release):
    s = results(release)["dead rank"]
    r = s["result"]
    assert s["elapsed"] < bound_s() and r["timed_out"] and s["refused"] is None
    assert r["plan"]["pool_source"].startswith("not reported within")  # the pool query gave up, shielded
    assert r["ranks"]["1"]["state"] == "unanswered" and r["ranks"]["0"]["state"] == "done"
    assert any(rid.startswith("cp-symm-warmup-1-0-") for rid in s["aborted"])  # told first, then cancelled
    assert any(rid.startswith("cp-symm-warmup-1-0-") for rid in s["cancelled"])
    assert r["markers"]["1"] == "unanswered" and r["markers"]["0"] == "done"
    assert len(s["warnings"]) == 1


@pytest.mark.parametrize("release", RELEASES)
def test_a_failure_on_one_rank_stops_the_other_at_once(release):
    s = results(release)["failed rank"]
    r = s["result"]
    assert s["elapsed"] < 0.6 + 1.0 and not r["timed_out"] and r["error"]  # the other rank's 0.6 s prompt was cut
    assert "DP rank 1 failed on its 4096-token prompt" in r["error"] and "DP rank(s) 0 stopped" in r["error"]
    assert s["sent"][0] == [4096, 1] and s["sent"][1] == [4096, 1]  # rank 0 got nothing after its first prompt
    assert r["ranks"]["0"]["state"] == "stopped" and len(r["ranks"]["0"]["aborted"]) == 1
    assert r["markers"] == {"0": "done", "1": "done"}  # both ranks still close their warm-up
    assert len(s["warnings"]) == 1 and "CUDA out of memory on DP rank 1" in s["warnings"][0]


@pytest.mark.parametrize("release", RELEASES)
def test_the_engines_first_requests_wait_at_most_the_bound_then_are_served(release):
    s = results(release)["engine, stalled rank"]
    assert s["result"]["timed_out"] and s["elapsed"] < bound_s()
    assert s["answered"] == ["length", "length"]  # served (routed to DP rank 0) once the warm-up gave up
    assert s["guard"] == "released" and s["restored"]  # and the guard took itself off


@pytest.mark.parametrize("release", RELEASES)
def test_strict_mode_fails_the_start_after_stopping_every_rank(release):
    s = results(release)["strict, stalled rank"]
    assert s["refused"].startswith("sglang-cp-symm strict mode: sglang-cp-symm: the CP warm-up")
    assert s["elapsed"] < bound_s() and s["result"]["markers"] == {"0": "done", "1": "unanswered"}
    assert any(rid.startswith("cp-symm-warmup-1-0-") for rid in s["aborted"]) and s["warnings"] == []


@pytest.mark.parametrize("release", RELEASES)
def test_chunking_off_with_large_pages_sends_what_the_releases_scheduler_admits(release):
    """0.5.11+ reserve a page per request: max_req_input_len - 1 passes validation but is never admitted (NO_TOKEN,
    a warm-up that would wait for ever). The plan sends the longest prompt the scheduler admits, reported pool or
    not; earlier releases admit the longest accepted prompt."""
    by = results(release)
    old = by["the accepted prompt the old plan sent"]["schedule"]
    new_rules = tuple(int(x) for x in release.split(".")) >= (0, 5, 11)
    assert old["accepted"] and old["admitted"] is not new_rules
    for name in ("chunking off, pages of 64, the release's scheduler", "the same, the pool not reported"):
        s = by[name]
        assert s["result"]["ran"] and s["result"]["seconds"] < DEADLINE_S, s
        tokens, admitted, _ = s["schedules"][0]
        assert admitted and tokens == (40894 if new_rules else 40953)
        assert tokens == s["result"]["plan"]["longest_forward"]["tokens"]
