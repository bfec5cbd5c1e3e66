"""Stage B: the warm-up against real sglang releases, each case in a process of its own (forked from the release's
fork server, tests/forkserver.py; two fresh interpreters where launches must differ).

Real here: each release's ``ServerArgs`` (resolved as its server resolves them, on
the CPU), its ``ModelConfig`` (from tests/models), its ``GenerateReqInput``, its named
warm-up registry and runner (``execute_warmups``, what the HTTP server's lifespan
calls), its ``prepare_server_args``, and the plugin's entry point. Stood in: the
tokenizer manager (its module needs the CUDA-only sgl_kernel; see
tests/warmup_harness.py). Which releases: 0.5.11, 0.5.12 and 0.5.23 import those
modules on this machine; 0.5.8-0.5.10 need sgl_kernel for ``io_struct`` (their hooks
are checked at the source level by the release sweep).
"""

import json
from pathlib import Path

import pytest

from conftest import last_line, run_python

HERE = Path(__file__).resolve().parent  # warmup_harness.py lives beside this file


def run_here(*args, **kwargs):
    return run_python(*args, cwd=HERE, **kwargs)

pytestmark = pytest.mark.release

RELEASES = ["0.5.11", "0.5.12", "0.5.23"]
ON = {"SGLANG_CP_SYMM": "1"}


def cp_args(release: str, **extra) -> dict:
    """Qwen3-30B-A3B with attention CP 2 on TP 4, in each release's own flags."""
    flags = (dict(enable_prefill_cp=True, cp_strategy="zigzag") if release >= "0.5.13"
             else dict(enable_prefill_context_parallel=True))
    return dict(tp_size=4, attn_cp_size=2, **flags, **extra)


def run(release: str, body: str, env=None, args=None, fresh=False) -> dict:
    code = f"""
import json, logging, sys
import warmup_harness as h
args = h.server_args({args!r})
{body}
"""
    return json.loads(last_line(run_here(release, code, env=dict(ON, **(env or {})), fresh=fresh)))


PLAN_CASES = [
    # chunk 8192: the full chunk, then where K/V (512 B a row per rank) and the hidden states (4 KiB) cross 1 MiB
    (dict(chunked_prefill_size=8192), [8192, 4096, 2048, 512, 256], 1),
    # chunk 8100 with pages of 64: the first chunk is cut to 8064, the second carries the full 8100
    (dict(chunked_prefill_size=8100, page_size=64), [8064 + 8100, 4096, 2048, 512, 256], 1),
    # chunking off: the longest prompt the scheduler accepts (context 40960 - 6, then shorter)
    (dict(chunked_prefill_size=-1), [40953, 4096, 2048, 512, 256], 1),
    # DP attention 2: the server halves the chunk; one set of prompts per DP rank; a whole K/V head per rank
    (dict(chunked_prefill_size=8192, dp_size=2, enable_dp_attention=True), [4096, 2048, 1024, 512, 256], 2),
]

_plans: dict = {}


def plans(release: str) -> list:
    """The plan of every case of ``PLAN_CASES`` on one release, from one process (the plan is a pure function of
    the resolved arguments: nothing is activated, so one case cannot leave state behind for the next)."""
    if release not in _plans:
        _plans[release] = run(release, f"""
from sglang_cp_symm.engine.warmup import plan_for
from sglang.srt.managers.io_struct import GenerateReqInput
out = []
for extra in {[cp_args(release, **extra) for extra, _, _ in PLAN_CASES]!r}:
    plan = plan_for(h.RecordingTokenizerManager(h.server_args(extra)), GenerateReqInput)
    out.append({{"prompts": plan.prompts, "dp": plan.dp_size, "cp": plan.cp_size, "route": plan.route_field}})
h.emit(out)
""", args=cp_args(release))
    return _plans[release]


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("case", range(len(PLAN_CASES)), ids=["chunk", "pages", "unchunked", "dp"])
def test_plan_from_the_servers_own_resolved_arguments(release, case):
    _, prompts, dp_ranks = PLAN_CASES[case]
    assert plans(release)[case] == {"prompts": prompts, "dp": dp_ranks, "cp": 2, "route": "routed_dp_rank"}


def test_override_sets_the_longest_prompt():
    got = run("0.5.11", """
from sglang_cp_symm.engine.warmup import plan_for
from sglang.srt.managers.io_struct import GenerateReqInput
h.emit(plan_for(h.RecordingTokenizerManager(args), GenerateReqInput, override=12345).prompts)
""", args=cp_args("0.5.11", chunked_prefill_size=8192))
    assert got == [12345, 4096, 2048, 512, 256]


@pytest.mark.parametrize("release", RELEASES)
def test_sglangs_named_warmup_runner_sends_the_plan_to_every_dp_rank(release):
    got = run(release, """
import time
h.activate()
tm = h.RecordingTokenizerManager(args, latency_s=0.05)
started = time.monotonic()
h.run_named_warmup(tm)
wall = time.monotonic() - started
first = tm.summary()
h.run_named_warmup(tm)  # the lifespan of a second tokenizer worker, say: the process's warm-up ran already
from sglang_cp_symm.engine.activation import current
state = current().warmup
h.emit({"requests": first, "after_second_call": len(tm.requests), "result": state.result, "wall": wall})
""", args=cp_args(release, chunked_prefill_size=8192, dp_size=2, enable_dp_attention=True))
    requests, result = got["requests"], got["result"]
    for dp in (0, 1):
        mine = [r for r in requests if r["dp"] == dp]
        assert [r["tokens"] for r in mine] == [4096, 2048, 1024, 512, 256, 1]  # the plan, then the marker
        assert all(r["max_new_tokens"] == 1 and r["ids_in_vocab"] for r in mine)
        assert all(r["rid"].startswith("cp-symm-warmup-") for r in mine) and mine[-1]["rid"].startswith(
            "cp-symm-warmup-done-")
    assert requests[0]["first_ids"] != requests[6]["first_ids"] or requests[0]["dp"] == requests[6]["dp"]
    assert got["after_second_call"] == len(requests)  # once per process
    assert result["ran"] and result["prompts"] == [4096, 2048, 1024, 512, 256] and result["dp_size"] == 2
    # the time it reports is that of the sequence it ran: each rank's 5 prompts and its marker, 0.05 s each
    assert result["error"] is None and 6 * 0.05 - 0.001 <= result["seconds"] <= got["wall"], (result, got["wall"])


def test_random_ids_differ_between_launches():
    """A radix-cache hit would shorten the prefill: two launches must not send the same prompt. Two fresh
    interpreters, as two launches are: forks of one server would inherit whatever state the ids came from."""
    body = """
h.activate()
tm = h.RecordingTokenizerManager(args)
h.run_named_warmup(tm)
h.emit(tm.summary()[0]["first_ids"])
"""
    args = cp_args("0.5.11", chunked_prefill_size=8192)
    assert run("0.5.11", body, args=args, fresh=True) != run("0.5.11", body, args=args, fresh=True)


@pytest.mark.parametrize("failure", ["fail_at_tokens", "abort_at_tokens"])
def test_a_failed_warmup_warns_says_what_it_costs_and_the_server_starts(failure):
    got = run("0.5.11", f"""
import io
stream = io.StringIO()
logging.getLogger("sglang.cp_symm").addHandler(logging.StreamHandler(stream))
h.activate()
tm = h.RecordingTokenizerManager(args, {failure}=8192)
h.run_named_warmup(tm)  # returns: sglang's lifespan goes on to serve
from sglang_cp_symm.engine.activation import current
state = current().warmup
h.emit({{"result": state.result, "log": stream.getvalue(), "sent": [len(r.input_ids) for r in tm.requests]}})
""", args=cp_args("0.5.11", chunked_prefill_size=8192))
    assert not got["result"]["ran"] and got["result"]["error"]
    assert "the CP warm-up (8192-token prefill on 1 DP rank(s)) failed" in got["log"]
    assert "the symmetric pool may still grow at run time" in got["log"] and "SGLANG_CP_SYMM_WARMUP_TOKENS" in got["log"]
    assert got["sent"][-1] == 1  # the completion marker still goes out, so every rank closes its warm-up


def test_strict_mode_refuses_to_start_without_the_warmup():
    result = run_here("0.5.11", """
import warmup_harness as h
from sglang_cp_symm.engine.warmup import WarmupFailed
h.activate()
tm = h.RecordingTokenizerManager(h.server_args(%r), fail_at_tokens=8192)
try:
    h.run_named_warmup(tm)
except WarmupFailed as exc:
    print("refused:", exc)
""" % cp_args("0.5.11", chunked_prefill_size=8192), env=dict(ON, SGLANG_CP_SYMM_STRICT="1"), fresh=False)
    assert "refused: sglang-cp-symm strict mode: sglang-cp-symm: the CP warm-up" in last_line(result)


@pytest.mark.parametrize("setup,reason", [
    ("h.RecordingTokenizerManager(args, enable_symm_mem=False)", "--enable-symm-mem is off"),
    ("h.RecordingTokenizerManager(h.server_args(dict(tp_size=4, chunked_prefill_size=8192)))",
     "attention context parallelism is off"),
])
def test_nothing_to_warm_is_skipped_with_the_reason(setup, reason):
    got = run("0.5.11", f"""
h.activate()
tm = {setup}
h.run_named_warmup(tm)
from sglang_cp_symm.engine.activation import current
state = current().warmup
h.emit({{"skipped": state.result["skipped"], "sent": len(tm.requests)}})
""", args=cp_args("0.5.11", chunked_prefill_size=8192))
    assert reason in got["skipped"] and got["sent"] == 0


def test_a_pd_decode_server_runs_no_prefill():
    got = run("0.5.11", """
h.activate()
tm = h.RecordingTokenizerManager(args)
h.run_named_warmup(tm, mode="decode")
from sglang_cp_symm.engine.activation import current
state = current().warmup
h.emit([state.result["skipped"], len(tm.requests)])
""", args=cp_args("0.5.11", chunked_prefill_size=8192))
    assert got == ["a PD decode server runs no prefill", 0]


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("env,argv,expected", [
    ({}, [], "cp_symm_max_tokens"),
    ({}, ["--warmups", "voice_chat"], "voice_chat,cp_symm_max_tokens"),
    ({"SGLANG_CP_SYMM_WARMUP": "0"}, ["--warmups", "voice_chat"], "voice_chat"),
])
def test_the_command_line_gets_the_named_warmup(release, env, argv, expected):
    result = run_here(release, f"""
import sglang_cp_symm.engine.plugin as p
assert p.activate()
import sglang.srt.entrypoints.warmup as w
from sglang.srt.server_args import prepare_server_args
import warmup_harness as h
a = prepare_server_args(["--model-path", h.MODEL_DIR, "--device", "cpu", "--skip-tokenizer-init"] + {argv!r})
print(a.warmups, "cp_symm_max_tokens" in w._warmup_registry)
""", env=dict(ON, **env), fresh=False)
    warmups, registered = last_line(result).split()
    assert warmups == expected and registered == str("SGLANG_CP_SYMM_WARMUP" not in env)


def test_the_first_request_waits_for_the_warmup_where_no_named_warmup_ran():
    """The offline Engine's path: the guard wraps the tokenizer manager's generate_request (here the stand-in's,
    with the same signature), runs the warm-up once before the first request, and then takes itself off."""
    got = run("0.5.11", """
import asyncio, wrapt
from sglang_cp_symm.engine import activation
from sglang.srt.managers.io_struct import GenerateReqInput
h.activate()
original = h.RecordingTokenizerManager.__dict__["generate_request"]
installer = activation.current().installer
wrapt.wrap_function_wrapper(h.RecordingTokenizerManager, "generate_request", installer.first_request_guard)
installer._undo["warmup.first_request"] = [
    lambda: setattr(h.RecordingTokenizerManager, "generate_request", original)]
installer.statuses["warmup.first_request"] = "installed"
tm = h.RecordingTokenizerManager(args)

async def user(i):
    req = GenerateReqInput(input_ids=[1, 2, 3], sampling_params={"max_new_tokens": 1}, rid=f"user-{i}")
    return [out async for out in tm.generate_request(req)]

async def main():
    await asyncio.gather(user(0), user(1), user(2))
    await user(3)

asyncio.run(main())
order = [r.rid.split("-")[0] + ("-done" if "done" in r.rid else "") for r in tm.requests]
h.emit({"order": order, "restored": h.RecordingTokenizerManager.__dict__["generate_request"] is original,
        "state": installer.describe()["warmup.first_request"]})
""", args=cp_args("0.5.11", chunked_prefill_size=8192))
    order = got["order"]
    warm = [i for i, r in enumerate(order) if r.startswith("cp")]
    users = [i for i, r in enumerate(order) if r == "user"]
    assert len(warm) == 6 and len(users) == 4  # one warm-up (5 prompts + marker) for three concurrent first requests
    assert max(warm) < min(users)
    assert got["restored"] and got["state"] == "released"


def test_hooks_install_report_and_come_off_with_unpatch():
    got = run("0.5.11", """
import sglang_cp_symm as s
from sglang.srt.distributed.device_communicators import pynccl_allocator as pa
import sglang.srt.entrypoints.warmup as w, sglang.srt.server_args as sa
before = (pa.SymmetricMemoryContext.__dict__["__enter__"], sa.ServerArgs.__dict__["from_cli_args"])
h.activate()
on = s.status()
s.unpatch()
after = (pa.SymmetricMemoryContext.__dict__["__enter__"], sa.ServerArgs.__dict__["from_cli_args"])
h.emit({"hooks": on["hooks"], "line": on["watchdog"]["phase"], "restored": before == after,
        "registry": "cp_symm_max_tokens" in w._warmup_registry, "after": s.status()["hooks"]})
""", args=cp_args("0.5.11", chunked_prefill_size=8192))
    assert got["hooks"] == {"warmup.named": "installed", "warmup.cli": "installed",
                            "warmup.first_request": "waiting for import", "watchdog.rank": "waiting for import",
                            "watchdog.context": "installed"}
    assert got["restored"] and not got["registry"] and got["after"] == {}


def test_the_watchdogs_counter_reaches_sglangs_metrics(tmp_path):
    """prometheus_client in multiprocess mode, as sglang runs it with --enable-metrics."""
    result = run_python(None, """
from sglang_cp_symm.engine.watchdog import Growth, PoolWatchdog
dog = PoolWatchdog(reserved=lambda: 0, pools=dict, stats=dict)
assert dog.count_in_metrics() and dog.count_in_metrics() and dog.on_growth.count(dog.metric) == 1
for phase in ("warm-up", "serving", "serving"):
    for callback in dog.on_growth:
        callback(Growth(phase, 2 << 20, 0, 1, "here", 0.0))
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
registry = CollectorRegistry()
MultiProcessCollector(registry)
text = generate_latest(registry).decode()
print([line for line in text.splitlines() if line.startswith("sglang_cp_symm_pool_growths_total")])
""", env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    lines = last_line(result)
    assert "sglang_cp_symm_pool_growths_total{phase=\"serving\"} 2.0" in lines
    assert "sglang_cp_symm_pool_growths_total{phase=\"warm-up\"} 1.0" in lines


def test_no_metrics_without_sglangs_multiprocess_folder():
    out = last_line(run_python(None, """
from sglang_cp_symm.engine.watchdog import PoolWatchdog
print(PoolWatchdog(reserved=lambda: 0, pools=dict, stats=dict).count_in_metrics())
"""))
    assert out == "False"
