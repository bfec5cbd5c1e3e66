"""``python -m bench.stage_d``: ``worker`` (one rank, under torchrun), ``spawn`` (the CPU dry run's launcher)
and ``table`` (the table from a run's folder).

``spawn`` imports torch and the release's modules once and forks the ranks from that process, so N ranks
cost one import instead of N (an import of sglang is 6-8 s of CPU here; CI has 2 cores). Each child gets
exactly the environment torchrun gives a rank (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and runs the same ``worker.main``. GPU runs use torchrun (``ci/stage-d.sh``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from . import modes as mode_defs
from .sweep import LATENCY_MIB


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the ranks' files (rank<R>.json, .progress)")
    p.add_argument("--modes", default=",".join(m.name for m in mode_defs.MODES), type=mode_defs.parse_modes,
                   help="comma-separated: " + ", ".join(m.name for m in mode_defs.MODES))
    p.add_argument("--cp-sizes", default="", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                   help="CP sizes to build inside the N ranks (sglang's layout for tp = N); default N")
    p.add_argument("--sizes", default=",".join(f"{m:g}" for m in LATENCY_MIB),
                   type=lambda s: [float(x) for x in s.split(",") if x.strip()],
                   help="latency sizes, MiB of gathered output ('' for none)")
    p.add_argument("--iters", type=int, default=50, help="timed calls per size")
    p.add_argument("--warmup", type=int, default=5, help="calls per size before timing (the pool's warm-up)")
    p.add_argument("--profile-calls", type=int, default=10, help="calls per size under the profiler (GPU); 0: none")
    p.add_argument("--keep-traces", action="store_true", help="keep the profiler traces in --out")
    p.add_argument("--deadline", type=float, default=120.0, help="seconds any one step may take before it counts as a hang")
    p.add_argument("--prealloc-gb", type=float, default=4.0,
                   help="sglang's symmetric pre-allocation under the TP group (its default with --enable-symm-mem: 4)")
    p.add_argument("--long", action=argparse.BooleanOptionalAction, default=True,
                   help="prefill-sized totals in the sweep (GPU only)")
    p.add_argument("--quick", action="store_true", help="a shorter sweep (3 totals, 3 payloads): the CI dry run")
    p.add_argument("--cpu", action="store_true", help="gloo on CPU even where a GPU is visible")
    p.add_argument("--as-nccl", default=None, help="CPU only: the NCCL the policy judges (default: the release's pin)")


def spawn(args) -> int:
    """For each N of ``--nproc`` (e.g. 2,4,8): fork N ranks after one import, wait with a deadline, print
    the table (each N in ``<out>/n<N>``, as ``ci/stage-d.sh`` names its runs). Exit 0 when every table is complete, bit-identical and hang-free."""
    import socket

    import torch  # noqa: F401  (imported once, before the forks)
    from sglang.srt.distributed import parallel_state  # noqa: F401
    from sglang.srt.distributed.device_communicators import pynccl_allocator  # noqa: F401
    from . import releases, worker

    releases.gather_cases()  # imports the release's CP modules in the parent too
    import sglang_cp_symm.engine.patching  # noqa: F401
    import sglang_cp_symm.tools.rehearsal  # noqa: F401
    from .table import render, verdict_ok

    root, ok = args.out, True
    for nproc in args.nproc:
        args.out = os.path.join(root, f"n{nproc}")
        os.makedirs(args.out, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        children = {}
        for rank in range(nproc):
            pid = os.fork()
            if pid == 0:
                os.environ.update(RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank),
                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
                code = 1
                try:
                    code = worker.main(args)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            children[pid] = rank
        failed = {}
        limit = time.time() + args.timeout
        while children and time.time() < limit:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.05)
                continue
            code = os.waitstatus_to_exitcode(status)
            if code:
                failed[children[pid]] = code
            children.pop(pid, None)
        for pid, rank in children.items():  # past the launcher's own deadline
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            failed[rank] = "killed at the launcher's deadline"
        print(render(args.out), flush=True)
        if failed:
            print(f"stage D: N={nproc}: ranks failed: {failed}", flush=True)
        ok &= not failed and verdict_ok(args.out)
    return 0 if ok else 1


def nccl_version_code() -> int:
    """``ncclGetVersion`` of the library sglang's pynccl opens (``SGLANG_NCCL_SO_PATH``, else torch's
    ``libnccl.so.2``), read after torch is imported, as the plugin reads it; 0 when there is none."""
    import torch  # noqa: F401  (torch first: the bare name must find torch's copy)
    from sglang_cp_symm.engine.nccl_library import engine_nccl

    version, _ = engine_nccl()
    return 0 if version is None else version.major * 10000 + version.minor * 100 + version.patch


def collect(run: str, dest: str, prefix: str) -> int:
    """``<dest>/<prefix>-r<R>.log`` (each rank's NCCL log, found by the pid in its result) and
    ``<dest>/<prefix>.json`` (per rank: pid, NCCL, the all-gathers it handed to NCCL, per mode; and the
    table's summary): what the parser's test on real logs reads (``tests/bench/test_stage_d_logs.py``)."""
    import glob
    import json
    from .table import load, render

    os.makedirs(dest, exist_ok=True)
    text = render(run)
    data = load(run)
    ranks = {}
    for r, result in sorted(data["ranks"].items()):
        pid = result.get("pid")
        logs = [p for p in glob.glob(os.path.join(run, "nccl.*")) if pid and p.endswith(f".{pid}")]
        log_name = None
        if logs:
            log_name = f"{prefix}-r{r}.log"
            limit = 15 << 20  # files come back from the device at 16 MiB at most
            with open(logs[0], "rb") as src, open(os.path.join(dest, log_name), "wb") as out:
                out.write(src.read(limit))
        ranks[r] = {"pid": pid, "log": log_name, "nccl": result.get("nccl"), "device": result.get("device"),
                    "errors": [e.strip().splitlines()[-1][:300] for e in result.get("errors", [])],
                    "allgathers": {cp: {m: e.get("allgathers_issued") for m, e in c.get("modes", {}).items()}
                                   for cp, c in (result.get("cp") or {}).items()},
                    "log_rank0": {cp: c.get("log_rank0") for cp, c in (result.get("cp") or {}).items()}}
    # one profiler trace of a multi-rank run (rank 0, the default mode, its smallest size), for the trace test
    traces = sorted(glob.glob(os.path.join(run, "trace-r0-*-default-*.json")),
                    key=lambda p: float(p.rsplit("-", 1)[-1][:-len(".json")]))
    trace_name = None
    if traces and len(data["ranks"]) > 1 and os.path.getsize(traces[0]) < (15 << 20):
        trace_name = f"{prefix}-trace.json"
        with open(traces[0], "rb") as src, open(os.path.join(dest, trace_name), "wb") as out:
            out.write(src.read())
    summary_path = os.path.join(run, "summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    with open(os.path.join(dest, f"{prefix}.json"), "w") as f:
        json.dump({"ranks": ranks, "progress": data["progress"], "table": text.splitlines(), "trace": trace_name,
                   "trace_from": os.path.basename(traces[0]) if trace_name else None,
                   "args": (data["ranks"].get(0) or {}).get("args"), "summary": summary}, f, indent=1, default=str)
    print(f"stage D: collected {len([r for r in ranks.values() if r['log']])} NCCL log(s) and {prefix}.json into {dest}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stage_d", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_worker_arguments(sub.add_parser("worker", help="one rank (under torchrun)"))
    sp = sub.add_parser("spawn", help="the CPU dry run: fork N ranks after one import")
    add_worker_arguments(sp)
    sp.add_argument("--nproc", required=True, type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                    help="ranks, or several counts run one after the other: 2,4,8")
    sp.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run")
    tp = sub.add_parser("table", help="print the table of a finished (or hung) run")
    tp.add_argument("out")
    tp.add_argument("--check", action="store_true", help="exit 1 unless every mode ran bit-identical without a hang")
    sub.add_parser("nccl-version", help="the NCCL code (23007) of the library sglang's pynccl would load; 0 if none")
    cp = sub.add_parser("collect", help="copy a run's NCCL logs (one per rank) and a summary into a folder")
    cp.add_argument("run")
    cp.add_argument("dest")
    cp.add_argument("prefix")
    args = parser.parse_args(argv)
    if args.command == "nccl-version":
        print(nccl_version_code())
        return 0
    if args.command == "collect":
        return collect(args.run, args.dest, args.prefix)
    if args.command == "worker":
        from . import worker

        return worker.main(args)
    if args.command == "spawn":
        args.cpu = True
        return spawn(args)
    from .table import render, verdict_ok

    print(render(args.out))
    return 0 if not args.check or verdict_ok(args.out) else 1
