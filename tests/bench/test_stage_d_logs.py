"""Stage D's readers: NCCL's log, profiler traces, deadlines, the table's verdict, the NCCL carry.

Stage A material (no sglang, no GPU). The NCCL log lines are printed from NCCL's own format strings at
v2.28.9-1, v2.29.7-1 and v2.30.7-1, copied verbatim with their file:line and rendered behind the prefix
``src/debug.cc`` builds at each tag (``tests/bench/fixtures/stage_d_fixtures.py``, a stand-in for a capture:
no multi-GPU machine here). The same module writes whole captures in the layout ``bench.stage_d.cli.collect``
writes (``tests/bench/fixtures/stage-d/``), which the tests of captured runs read on every CI pass, with any
real capture committed under ``tests/data/stage-d/``.
The carry is tested on a real, small ELF library: the repository's NCCL stub (``tests/stubs/libnccl_stub.c``,
which exports ``ncclGetVersion`` and answers ``NCCL_STUB_VERSION``), in a wheel built here with a real
RECORD, since the 216 MB wheel cannot be compressed within a test's time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))

from bench.stage_d import deadline, nccl_carry, nccl_log, table, trace  # noqa: E402
import stage_d_fixtures as fx  # noqa: E402

DATA = ROOT / "tests" / "data" / "stage-d"  # real captures, once a multi-GPU machine made them
FIXTURES = fx.DEST  # captures printed from NCCL's format strings (stage_d_fixtures.py)
PID = fx.PIDS[0]


def lines(version):
    """Every kind of line the reader takes, as NCCL ``version`` prints it (formats and file:line in
    stage_d_fixtures.TAGS), and one line of something else."""
    spec = fx.TAGS[version]
    same_gpu = fx.printf(spec["same_gpu"][0], 0, 1, 0x18000) if "%d" in spec["same_gpu"][0] else spec["same_gpu"][0]
    return [
        fx.info(PID, fx.printf(spec["version"][0], version, spec["cuda"])),
        fx.info(PID, fx.printf(spec["init"][0], "ncclCommInitRank", "0x55d0c8a2e0", 0, 2, 0, 0, 0x18000, 0xabc)),
        fx.info(PID, fx.printf(spec["init_split"][0], "ncclCommSplit", "(nil)", 1, 4, 1, 1, 0x19000, "0x55d0c8a2e0",
                               1, 0, 1)),
        fx.info(PID, fx.printf(spec["symmetric"][0], "AllGather", 2097152, "AllGather_ST", 16, 512, 1)),
        fx.info(PID, fx.printf(spec["legacy"][0], "AllGather", 2097152, "Ring", "Simple", 0, 31)),
        fx.info(PID, fx.printf(spec["symmetric"][0], "AllGather", 65536, "AllGather_LL", 1, 512, 2),
                "[2026-12-01 10:00:00] "),
        fx.info(PID, fx.printf(spec["legacy"][0], "AllReduce", 4, "Ring", "LL", 0, 0), "2026-12-01 10:00:00 "),
        *fx.warn(spec, PID, same_gpu, spec["same_gpu"][1].split("/")[-1].split("-")[0], "initTransportsRank",
                 "[2026-12-01 10:00:00] "),
        "some other output of the process",
    ]


@pytest.mark.parametrize("version", list(fx.TAGS))
def test_parser_reads_what_nccls_format_strings_print(version):
    summary = nccl_log.parse(lines(version))
    gathers = summary.of("AllGather")
    assert [(c.symmetric, c.nbytes, c.kernel) for c in gathers] == [
        (True, 2097152, "AllGather_ST"), (False, 2097152, "Ring/Simple"), (True, 65536, "AllGather_LL")]
    assert summary.share("AllGather") == pytest.approx(2 / 3)
    assert summary.share("AllReduce") == 0.0 and summary.share("Broadcast") is None
    assert {c.pid for c in summary.choices} == {PID}  # the bracket-less timestamp too
    assert summary.versions == [version]
    assert summary.communicators == [{"comm": "0x55d0c8a2e0", "rank": 0, "nranks": 2, "pid": PID},
                                     {"comm": "(nil)", "rank": 1, "nranks": 4, "pid": PID}]
    assert summary.refused_same_gpu() and len(summary.warnings) == 1
    assert nccl_log.parse_line("NCCL INFO AllGather: garbage") is None
    # NCCL_DEBUG=VERSION (or WARN) prints the version alone, without the prefix (src/debug.cc: no host:pid:tid
    # for NCCL_LOG_VERSION; init.cc's showVersion)
    assert nccl_log.parse_line(fx.printf(fx.TAGS[version]["version"][0], version, "12.9")) == ("version", version)


def test_parser_reads_the_2_27_symmetric_line_without_nworks():
    # v2.27.7-1 src/enqueue.cc:1429: "%s [Symmetric]: %ld Bytes -> Kernel %s nchannels %d nthreads %d"
    line = fx.info(PID, fx.printf("%s [Symmetric]: %ld Bytes -> Kernel %s nchannels %d nthreads %d", "AllGather",
                                  65536, "AllGather_LL", 1, 512))
    kind, choice = nccl_log.parse_line(line)
    assert kind == "choice" and (choice.symmetric, choice.nbytes, choice.kernel) == (True, 65536, "AllGather_LL")


def test_a_warn_behind_a_timestamp_without_brackets_is_read():
    """NCCL_DEBUG_TIMESTAMP_FORMAT="%F_%T_" on 2.30.7 (src/debug.cc:189-190 at v2.30.7-1 turns '_' into ' '):
    the refusal of two ranks on one GPU is still a WARN and still recognised (the prefix was anchored at the
    start of the line before, so this WARN was read as no line at all)."""
    spec = fx.TAGS["2.30.7"]
    warn = fx.warn(spec, PID, spec["same_gpu"][0], "init.cc:1057", "initTransportsRank", "2026-12-01 10:00:00 ")
    kind, body = nccl_log.parse_line(warn[1])
    assert kind == "warn" and body.startswith("Multiple Ranks are using the same GPU")
    assert nccl_log.parse(warn).refused_same_gpu()


def test_committed_fixtures_are_what_nccls_format_strings_print():
    """tests/bench/fixtures/stage-d/ is exactly what stage_d_fixtures.py writes now (rewrite it with
    ``python3 tests/bench/fixtures/stage_d_fixtures.py``): a fixture edited by hand, or a format changed without
    the files, fails here."""
    expected = fx.files()
    assert sorted(p.name for p in FIXTURES.iterdir()) == sorted(expected)
    for name, text in expected.items():
        assert (FIXTURES / name).read_text() == text, name


def test_log_cursor_reads_only_the_phase_between_two_offsets(tmp_path):
    log = tmp_path / "nccl.gpu-host.4242"
    log.write_text("\n".join(lines("2.30.7")[3:6]) + "\n")
    cursor = nccl_log.LogCursor(str(log))
    start = cursor.offset()
    with open(log, "a") as f:
        f.write(fx.info(PID, fx.printf(fx.LEGACY, "AllGather", 1024, "Ring", "LL", 0, 0)) + "\n")
    end = cursor.offset()
    with open(log, "a") as f:
        f.write(fx.info(PID, fx.printf(fx.SYMMETRIC, "AllGather", 1024, "AllGather_LL", 1, 512, 1)) + "\n")
    phase = cursor.read(start, end)
    assert [(c.symmetric, c.kernel) for c in phase.of("AllGather")] == [(False, "Ring/LL")]
    assert cursor.read(0).share() == pytest.approx(3 / 5)
    assert nccl_log.LogCursor(None).read(0).share() is None


def test_log_file_name_expands_host_and_pid(tmp_path):
    env = {"NCCL_DEBUG_FILE": str(tmp_path / "nccl.%h.%p")}
    path = nccl_log.log_file_of_this_process(env)
    assert path.endswith(f".{os.getpid()}") and "%" not in path
    assert nccl_log.log_file_of_this_process({}) is None


# Kernel names as the profiler shows them (stage_d_fixtures.PROFILER_KERNELS, from the tags' generate.py), the
# 2.27 symmetric name (``ncclSymDevKernel_*``, v2.27.7-1 src/device/symmetric/generate.py:136-138) and a
# kernel that is not NCCL's.
KERNELS = [fx.PROFILER_KERNELS[0], fx.PROFILER_KERNELS[1], "ncclSymDevKernel_AllGather_LL(ncclSymDevArgs)",
           "void at::native::vectorized_elementwise_kernel<4>(int, at::native::FillFunctor<c10::BFloat16>)"]


def test_trace_counts_symmetric_and_other_nccl_kernels(tmp_path):
    events = [{"cat": "kernel", "name": n, "dur": d} for n, d in zip(KERNELS, (10.0, 20.0, 12.0, 3.0))]
    events.append({"cat": "cpu_op", "name": "ncclSymkDevKernel_AllGather_ST", "dur": 1})  # not a GPU kernel
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"traceEvents": events}))
    count = trace.count_trace_file(str(path))
    assert (count.symmetric, count.other_nccl) == (2, 1)
    assert count.share() == pytest.approx(2 / 3)
    assert count.median_us() == 12.0
    assert count.describe()["names"]["ncclSymkDevKernel_AllGather_ST"] == 1


def test_a_step_past_its_deadline_exits_and_is_reported_as_a_hang(tmp_path):
    progress = tmp_path / "rank1.progress"
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from bench.stage_d.deadline import Progress\n"
            f"p = Progress({str(progress)!r}, 0.5)\n"
            "with p.step(step='ok', cp=2, mode='default'):\n    pass\n"
            "with p.step(step='gather', cp=2, mode='send', case='kv'):\n    time.sleep(30)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert run.returncode == 1
    last = deadline.last_step(str(progress))
    assert last["step"] == "gather" and last["mode"] == "send" and last["hung"]
    (tmp_path / "rank0.json").write_text(json.dumps({"rank": 0, "world": 2, "device": "cpu (gloo)", "cp": {
        "2": {"groups": [[0, 1]], "modes": {"send": {"sweep": {"cases": 1, "identical": 1}}}}}}))
    text = table.render(str(tmp_path))
    assert "HANG r1 gather kv" in text
    assert not table.verdict_ok(str(tmp_path))


def small_wheel(tmp_path: Path) -> Path:
    stub = ROOT / ".envs" / "libnccl-stub.so"
    if not stub.exists():
        pytest.skip("the NCCL stub is built by ci/envs.sh")
    data = stub.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    wheel = tmp_path / "nvidia_nccl_cu13-2.30.7-py3-none-manylinux_2_18_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(nccl_carry.LIB_IN_WHEEL, data)
        z.writestr("nvidia_nccl_cu13-2.30.7.dist-info/RECORD",
                   f"{nccl_carry.LIB_IN_WHEEL},sha256={digest},{len(data)}\n")
    return wheel


def test_nccl_carry_splits_joins_checks_and_reports_missing_parts(tmp_path, capsys):
    wheel = small_wheel(tmp_path)
    dest = tmp_path / "carried"
    room = 600
    assert nccl_carry.main(["prepare", "--wheel", str(wheel), "--version", "2.30.7", "--dest", str(dest),
                            "--work", str(tmp_path / "work"), "--margin-mib", "0",
                            "--tree-bytes", str(nccl_carry.CALL_LIMIT - room), "--first-call-bytes", "300"]) == 0
    manifest = json.loads((dest / "MANIFEST.json").read_text())
    sizes = [p["bytes"] for p in manifest["parts"]]
    assert len(sizes) >= 3 and sizes[0] <= 300 and max(sizes) <= room and sum(sizes) == manifest["xz_bytes"]
    # a call that carried only some of the parts: stored, and the rest named
    partial = tmp_path / "partial"
    shutil.copytree(dest, partial, ignore=lambda d, names: [n for n in names if n in ("p1", "p2")])
    store, prefix = tmp_path / "store", tmp_path / "prefix"
    common = ["--store", str(store), "--prefix", str(prefix)]
    assert nccl_carry.main(["add", "--carried", str(partial)] + common) == 3
    assert "still to carry: [1, 2]" in capsys.readouterr().out
    # a damaged part is refused
    broken = tmp_path / "broken"
    shutil.copytree(dest, broken)
    part1 = broken / "p1" / manifest["parts"][1]["file"]
    part1.write_bytes(b"x" + part1.read_bytes()[1:])
    with pytest.raises(SystemExit, match="arrived damaged"):
        nccl_carry.main(["add", "--carried", str(broken)] + common)
    # the next call brings the rest: joined, checked against the RECORD, installed in the wheel's layout
    assert nccl_carry.main(["add", "--carried", str(dest)] + common) == 0
    lib = prefix / nccl_carry.LIB_IN_WHEEL
    assert lib.read_bytes() == (ROOT / ".envs" / "libnccl-stub.so").read_bytes()
    env = dict(os.environ, NCCL_STUB_VERSION="23007")
    run = subprocess.run([sys.executable, "-m", "bench.stage_d.nccl_carry", "verify", "--carried", str(dest),
                          "--prefix", str(prefix)], capture_output=True, text=True, env=env, cwd=str(ROOT))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ctypes: ok: ncclGetVersion: 23007" in run.stdout
    env["NCCL_STUB_VERSION"] = "22809"  # the library answers another version: verify must fail
    run = subprocess.run([sys.executable, "-m", "bench.stage_d.nccl_carry", "verify", "--carried", str(dest),
                          "--prefix", str(prefix)], capture_output=True, text=True, env=env, cwd=str(ROOT))
    assert run.returncode == 1 and "ctypes: FAILED" in run.stdout


def captured_runs():
    """Every capture: the real ones committed under tests/data/stage-d/ and the fixtures printed from NCCL's
    format strings (three tags, a two-rank run and a refused launch of two ranks on one GPU each)."""
    runs = []
    for folder in (DATA, FIXTURES):
        if folder.is_dir():
            runs += sorted(p for p in folder.glob("*.json") if not p.name.endswith("-trace.json"))
    return runs


def run_id(path):
    return ("fixture:" if path.parent == FIXTURES else "device:") + path.stem


def traced_runs():
    return [p for p in captured_runs() if json.loads(p.read_text()).get("trace")]


def test_every_tag_has_a_two_rank_capture_and_a_refusal_among_the_captures():
    names = {p.name for p in captured_runs()}
    for version in fx.TAGS:
        assert {f"nccl-{version}-cp2.json", f"nccl-{version}-same-gpu.json"} <= names, version
    assert {f"nccl-{version}-cp2.json" for version in fx.TAGS} <= {p.name for p in traced_runs()}
    for version in fx.TAGS:  # the refusal is read on every rank of every tag
        for rank in (0, 1):
            log = (FIXTURES / f"nccl-{version}-same-gpu-r{rank}.log").read_text()
            assert nccl_log.parse_text(log).refused_same_gpu(), (version, rank)


@pytest.mark.parametrize("run", captured_runs(), ids=run_id)
def test_parser_on_captured_logs(run):
    """Each rank's NCCL log: its version line names the NCCL the harness read; the number of AllGather
    choices NCCL's rank 0 logged equals the all-gathers the harness handed to NCCL on that rank (none with
    one rank: NCCL runs a one-rank collective as a copy, src/enqueue.cc:2569-2570 at v2.28.9-1); a refused
    launch of two ranks on one GPU shows NCCL's refusal."""
    record = json.loads(run.read_text())
    checked = 0
    for rank, info in record["ranks"].items():
        if not info.get("log"):
            continue
        summary = nccl_log.parse((run.parent / info["log"]).read_text(errors="replace").splitlines())
        nccl = info.get("nccl") or {}
        if nccl.get("engine"):
            assert nccl["engine"] in summary.versions, (summary.versions, nccl)
        if info.get("errors") and summary.refused_same_gpu():
            checked += 1
            continue
        world = len(record["ranks"])
        for cp, modes in (info.get("allgathers") or {}).items():
            issued = sum(v or 0 for v in modes.values())
            logged = len(summary.of("AllGather"))
            if world == 1:
                assert logged == 0
            elif (info.get("log_rank0") or {}).get(cp):
                assert logged == issued, (rank, cp, logged, issued)
                assert all(c.pid == info["pid"] for c in summary.of("AllGather")), (rank, info["pid"])
        checked += 1
    assert checked


@pytest.mark.parametrize("run", traced_runs(), ids=run_id)
def test_trace_counter_on_captured_traces(run):
    """A trace of rank 0 around ``profile_calls`` calls of the CP all-gather: exactly that many NCCL
    kernels, whichever family, and a kernel time for each."""
    record = json.loads(run.read_text())
    count = trace.count_trace_file(str(run.parent / record["trace"]))
    assert count.total == record["args"]["profile_calls"], count.describe()
    assert len(count.durations_us) == count.total
