"""Stage D's readers: NCCL's log, profiler traces, deadlines, the table's verdict, the NCCL carry.

Stage A material (no sglang, no GPU). The NCCL log lines are produced from NCCL's own format strings,
copied verbatim with their source (NVIDIA/nccl tags) and printed with Python's ``%`` (``%ld`` as ``%d``),
behind the prefix ``src/debug.cc`` builds; the real log text captured on the device is read by
``test_parser_on_logs_captured_on_the_device`` once it is committed under ``tests/data/stage-d/``.
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

from bench.stage_d import deadline, nccl_carry, nccl_log, table, trace  # noqa: E402

DATA = ROOT / "tests" / "data" / "stage-d"
PREFIX = "gpu-host:4242:4250 [0] NCCL INFO "
# v2.30.7-1 src/scheduler/symmetric_sched.cc:356 (same at v2.28.9-1 :229, v2.29.7-1 :288)
SYMMETRIC_FMT = "%s [Symmetric]: %ld Bytes -> Kernel %s nchannels %d nthreads %d nWorks %d"
# v2.27.7-1 src/enqueue.cc:1429
SYMMETRIC_FMT_227 = "%s [Symmetric]: %ld Bytes -> Kernel %s nchannels %d nthreads %d"
# v2.30.7-1 src/enqueue.cc:822 (v2.28.9-1 :741)
LEGACY_FMT = "%s: %ld Bytes -> Algo %s proto %s channel{Lo..Hi}={%d..%d}"
# v2.30.7-1 src/init.cc:1945
INIT_FMT = "%s comm %p rank %d nranks %d cudaDev %d nvmlDev %d busId %lx commId 0x%llx - Init COMPLETE"
# v2.28.9-1 src/init.cc:904, printed as WARN by src/debug.cc:345 "[%d] %s:%d (%s) NCCL WARN %s"
DUPLICATE_FMT = "Duplicate GPU detected : rank %d and rank %d both on CUDA device %lx"


def printf(fmt: str, *args) -> str:
    return fmt.replace("%ld", "%d").replace("%lx", "%x").replace("%llx", "%x").replace("%p", "%s") % args


def lines():
    return [
        PREFIX + "NCCL version 2.30.7+cuda13.0",  # VERSION_STRING, src/init.cc:695
        PREFIX + printf(INIT_FMT, "ncclCommInitRank", "0x55d0c8a2e0", 0, 2, 0, 0, 0x18000, 0xabc),
        PREFIX + printf(SYMMETRIC_FMT, "AllGather", 2097152, "AllGather_ST", 16, 512, 1),
        PREFIX + printf(LEGACY_FMT, "AllGather", 2097152, "RING", "SIMPLE", 0, 31),
        "[2026-12-01 10:00:00] " + PREFIX + printf(SYMMETRIC_FMT_227, "AllGather", 65536, "AllGather_LL", 1, 512),
        PREFIX + printf(LEGACY_FMT, "AllReduce", 4, "RING", "LL", 0, 0),
        "gpu-host:4242:4242 [0] init.cc:904 (initTransportsRank) NCCL WARN " + printf(DUPLICATE_FMT, 0, 1, 0x18000),
        "some other output of the process",
    ]


def test_parser_reads_what_nccls_format_strings_print():
    summary = nccl_log.parse(lines())
    gathers = summary.of("AllGather")
    assert [(c.symmetric, c.nbytes, c.kernel) for c in gathers] == [
        (True, 2097152, "AllGather_ST"), (False, 2097152, "RING/SIMPLE"), (True, 65536, "AllGather_LL")]
    assert summary.share("AllGather") == pytest.approx(2 / 3)
    assert summary.share("AllReduce") == 0.0 and summary.share("Broadcast") is None
    assert {c.pid for c in summary.choices} == {4242}
    assert summary.versions == ["2.30.7"]
    assert summary.communicators == [{"comm": "0x55d0c8a2e0", "rank": 0, "nranks": 2, "pid": 4242}]
    assert summary.refused_same_gpu()
    assert nccl_log.parse_line("NCCL INFO AllGather: garbage") is None


def test_log_cursor_reads_only_the_phase_between_two_offsets(tmp_path):
    log = tmp_path / "nccl.gpu-host.4242"
    log.write_text("\n".join(lines()[:3]) + "\n")
    cursor = nccl_log.LogCursor(str(log))
    start = cursor.offset()
    with open(log, "a") as f:
        f.write(PREFIX + printf(LEGACY_FMT, "AllGather", 1024, "RING", "LL", 0, 0) + "\n")
    end = cursor.offset()
    with open(log, "a") as f:
        f.write(PREFIX + printf(SYMMETRIC_FMT, "AllGather", 1024, "AllGather_LL", 1, 512, 1) + "\n")
    phase = cursor.read(start, end)
    assert [(c.symmetric, c.kernel) for c in phase.of("AllGather")] == [(False, "RING/LL")]
    assert cursor.read(0).share() == pytest.approx(2 / 3)
    assert nccl_log.LogCursor(None).read(0).share() is None


def test_log_file_name_expands_host_and_pid(tmp_path):
    env = {"NCCL_DEBUG_FILE": str(tmp_path / "nccl.%h.%p")}
    path = nccl_log.log_file_of_this_process(env)
    assert path.endswith(f".{os.getpid()}") and "%" not in path
    assert nccl_log.log_file_of_this_process({}) is None


# Kernel names as the 2.30.7 wheel's libnccl.so.2 exports them (demangled; ``ncclSymkDevKernel_*`` from
# src/device/symmetric/generate.py:156-158, ``ncclDevKernel_*`` from src/device/generate.py).
KERNELS = ["ncclSymkDevKernel_AllGather_ST(ncclSymkDevWorkArgs4K)",
           "ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)",
           "ncclSymDevKernel_AllGather_LL(ncclSymDevArgs)",
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
    return sorted(p for p in DATA.glob("*.json") if not p.name.endswith("-trace.json")) if DATA.is_dir() else []


@pytest.mark.skipif(not captured_runs(), reason="no NCCL log captured on the device yet: run the device calls of "
                    "docs/stage-d.md and commit their $OUT/*.log and $OUT/*.json under tests/data/stage-d/")
@pytest.mark.parametrize("run", captured_runs(), ids=lambda p: p.stem)
def test_parser_on_logs_captured_on_the_device(run):
    """Each rank's real NCCL log: its version line names the NCCL the harness read; the number of AllGather
    choices NCCL's rank 0 logged equals the all-gathers the harness handed to NCCL on that rank (none with
    one rank: NCCL runs a one-rank collective as a copy, src/enqueue.cc:2569-2570 at v2.28.9-1); a refused
    launch of two ranks on one GPU shows NCCL's refusal."""
    record = json.loads(run.read_text())
    checked = 0
    for rank, info in record["ranks"].items():
        if not info.get("log"):
            continue
        summary = nccl_log.parse((DATA / info["log"]).read_text(errors="replace").splitlines())
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
        checked += 1
    assert checked


@pytest.mark.skipif(not captured_runs(), reason="no profiler trace captured on the device yet (docs/stage-d.md)")
@pytest.mark.parametrize("run", captured_runs(), ids=lambda p: p.stem)
def test_trace_counter_on_traces_captured_on_the_device(run):
    """A real trace of rank 0 around ``profile_calls`` calls of the CP all-gather: exactly that many NCCL
    kernels, whichever family, and a kernel time for each."""
    record = json.loads(run.read_text())
    if not record.get("trace"):
        pytest.skip(f"{run.name}: no trace (one rank, or the run failed)")
    count = trace.count_trace_file(str(DATA / record["trace"]))
    assert count.total == record["args"]["profile_calls"], count.describe()
    assert len(count.durations_us) == count.total
