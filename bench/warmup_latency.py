"""Benchmark (one GPU, not a test): what the warm-up saves the first long request, and what the watchdog costs.

    python3 bench/warmup_latency.py [--max-tokens 8192 32768] [--repeats 3] [--overhead-only]

1. First-request latency. In fresh processes (sglang's allocator, the plugin's CP pool,
   one-rank communicators; see tests/gpu_pool_probe.py), the first call of the patched
   KV-cache all-gather at the longest length, timed on the host around a synchronised
   call: ``cold`` without warm-up (the call creates the pool segment: ncclMemAlloc plus
   the window registration), ``warm`` after the plugin's warm-up prompts. Both first load
   the kernels with an unpooled gather of the same size, so only the pool differs.
2. The watchdog's cost (issue 23): an empty ``with use_symmetric_memory(group)`` per context
   kind (a CP all-gather's, a TP all-reduce's), in fresh processes per configuration
   (``OVERHEAD_MODES``: the plugin off, on without the watchdog, on with the watchdog on its
   allocator counter, on with the watchdog on cudaMemGetInfo), paired in rounds; medians.
Prints one table per part; JSON lines of every child go to stderr.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "engine"))


def child_first_call(mode: str, max_tokens: int) -> dict:
    from types import SimpleNamespace

    from gpu_pool_probe import setup

    torch, pa, cp_utils, tp, cp, tp_comm, cp_comm, usm = setup("plugin")
    from sglang_cp_symm.engine.allocator_model import ModelShape, small_pool_tokens

    fn = cp_utils.cp_all_gather_reorganized_into_tensor_kv_cache
    stream = torch.cuda.current_stream()

    def call(n):
        x = torch.randn(n, 1, 576, device="cuda", dtype=torch.bfloat16)
        meta = cp_utils.ContextParallelMetadata(max_rank_len=[n], per_rank_actual_token=[n])
        return fn(x, n, 1, SimpleNamespace(attn_cp_metadata=meta), stream)

    # Load the kernels (gather, split, cat) outside the pool, so that only the pool differs below.
    x = torch.randn(max_tokens, 1, 576, device="cuda", dtype=torch.bfloat16)
    plain = torch.empty_like(x)
    cp.cp_all_gather_into_tensor_async(plain, x, stream)
    torch.cat(list(torch.split(plain, [max_tokens], dim=0)), dim=0)
    torch.cuda.synchronize()
    if mode == "warm":
        for n in [max_tokens] + small_pool_tokens(ModelShape("kv", {"kv": 1152}), 1, max_tokens):
            call(n)
        torch.cuda.synchronize()
    started = time.perf_counter()
    call(max_tokens)
    torch.cuda.synchronize()
    first = time.perf_counter() - started
    again = []
    for _ in range(20):
        started = time.perf_counter()
        call(max_tokens)
        torch.cuda.synchronize()
        again.append(time.perf_counter() - started)
    return {"mode": mode, "max_tokens": max_tokens, "first_ms": first * 1e3,
            "hit_median_ms": statistics.median(again) * 1e3}


OVERHEAD_MODES = {
    "off": "the plugin off (sglang's own context)",
    "no-watchdog": "the plugin on, SGLANG_CP_SYMM_WATCHDOG=0",
    "counter": "the plugin on, the watchdog on its allocator counter (the default)",
    "device-memory": "the plugin on, the watchdog on cudaMemGetInfo (its fallback; the signal before issue 23)",
}


def pin_cpu() -> None:
    """One core for every configuration's process (CP_SYMM_BENCH_CPU, default 2): the H100 host's per-process
    spread (3.8 or 7.0 us for the same context in fresh processes) is the core a process lands on, not the code."""
    cpu = os.environ.get("CP_SYMM_BENCH_CPU", "2")
    if cpu and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {int(cpu)})
        except (OSError, ValueError):
            pass


def _plugin_and_contexts():
    """The probe with the plugin applied, the watchdog's signal found and its baseline read.

    Returns: sglang's context class (``cls``), the plugin object (``plugin``) and its ``watchdog``, the groups
    (``tp``, ``cp``), and empty contexts opened as sglang's code opens them:
    - ``tp_ctx``: a TP all-reduce's, by a function the plugin does not know (sglang's ``use_symmetric_memory``,
      as every module outside the register binds it);
    - ``cp_ctx``: a CP all-gather's, as a register module opens it once the plugin is on (through the opener that
      ``cp_utils`` binds, from a function the watchdog watches);
    - ``cp_ctx_off``: the same context through sglang's own ``use_symmetric_memory``, as with the plugin off."""
    from gpu_pool_probe import setup

    torch, pa, cp_utils, tp, cp, tp_comm, cp_comm, usm = setup("plugin")
    from sglang_cp_symm.engine import activation
    from sglang_cp_symm.engine.context_hooks import MARK

    plugin = activation.current()
    watchdog = plugin.watchdog
    opener = cp_utils.use_symmetric_memory
    if not getattr(opener, MARK, False):
        raise SystemExit("the plugin bound no opener in cp_utils: nothing to measure")

    def tp_ctx():
        with usm(tp):
            pass

    def cp_ctx():
        with opener(cp):
            pass

    def cp_ctx_off():
        with usm(cp):
            pass

    watchdog.watch(cp_ctx.__code__)
    watchdog.between_requests()
    cp_ctx()
    return SimpleNamespace(cls=pa.SymmetricMemoryContext, plugin=plugin, watchdog=watchdog, tp=tp, cp=cp, usm=usm,
                           opener=opener, tp_ctx=tp_ctx, cp_ctx=cp_ctx, cp_ctx_off=cp_ctx_off)


def _configured(probe, config: str):
    """Put the plugin in ``config`` (``PAIRED_CONFIGS``); returns the CP context function to time."""
    table = probe.plugin.table
    table.listener = probe.watchdog if config == "counter" else None
    return probe.cp_ctx_off if config == "off" else probe.cp_ctx


def child_profile() -> dict:
    """Where a watched CP context's time goes, in one process (20 rounds): the pieces are the objects the
    configurations of ``child_paired`` time."""
    probe = _plugin_and_contexts()
    cls, watchdog, tp, cp, usm, opener = probe.cls, probe.watchdog, probe.tp, probe.cp, probe.usm, probe.opener
    table = probe.plugin.table

    def built_by_the_opener():  # the opener's work before the ``with``: the role, the routing, the wrapper
        return opener(cp)

    watchdog.watch(built_by_the_opener.__code__)
    pieces = {
        "cp context, sglang's own (plugin off)": probe.cp_ctx_off,
        "cp context, the opener, watchdog off": lambda: (setattr(table, "listener", None), probe.cp_ctx(),
                                                         setattr(table, "listener", watchdog)),
        "cp context, the opener, watched": probe.cp_ctx,
        "building a cp context: sglang's use_symmetric_memory": lambda: usm(cp),
        "building a cp context: the opener (role, routing, the watched wrapper)": built_by_the_opener,
        "building a tp context: sglang's use_symmetric_memory": lambda: usm(tp),
        "sys._getframe(0).f_code": lambda: sys._getframe(0).f_code,
        "watchdog entered()+leaving(), watched, nothing grew": lambda: (watchdog.entered(), watchdog.leaving()),
        "the counter's reading": watchdog._reserved,
        "setattr(table, 'listener', ...) (the timing of the watchdog-off line)": lambda: setattr(table, "listener",
                                                                                                 watchdog),
    }
    times = {k: [] for k in pieces}
    for _ in range(20):
        for k, fn in pieces.items():
            times[k].append(_per_call(fn))
    table.listener = watchdog
    return {"mode": "profile", "signal": watchdog.signal, "class_untouched": _class_untouched(cls),
            **{k: statistics.median(v) for k, v in times.items()}}


def _class_untouched(cls) -> bool:
    """sglang's ``SymmetricMemoryContext`` carries none of the plugin's functions (the race guard not engaged)."""
    from sglang_cp_symm.engine.context_hooks import MARK

    return not any(getattr(cls.__dict__.get(n), MARK, False) or
                   getattr(cls.__dict__.get(n), "__wrapped__", None) is not None
                   for n in ("__init__", "__enter__", "__exit__"))


PAIRED_CONFIGS = ("off", "no-watchdog", "counter")


def child_paired(rounds: int = 30, n: int = 2000) -> dict:
    """The configurations of ``OVERHEAD_MODES`` but the fallback, paired within ONE process: each round puts the
    plugin in each configuration in turn and times both context kinds, so every configuration sees the same core,
    caches and allocator state (fresh processes of one configuration differ by up to 2x on the H100 host, run 2 in
    docs/watchdog-cost.md). "off": the CP context through sglang's own ``use_symmetric_memory``; "no-watchdog": through
    the opener ``cp_utils`` binds, the watchdog not listening (the CP pool fix's routing and the class switch of
    0.5.9-0.5.10 remain); "counter": the plugin as installed, the watchdog on its allocator counter. The TP
    context is opened the same way in every configuration (the plugin leaves sglang's class alone); it is timed
    in each to show that."""
    probe = _plugin_and_contexts()
    cls, watchdog, tp_ctx = probe.cls, probe.watchdog, probe.tp_ctx
    times = {(c, k): [] for c in PAIRED_CONFIGS for k in ("tp", "cp")}
    try:
        for _ in range(rounds):
            for config in PAIRED_CONFIGS:
                cp_ctx = _configured(probe, config)
                times[(config, "tp")].append(_per_call(tp_ctx, n))
                times[(config, "cp")].append(_per_call(cp_ctx, n))
    finally:
        probe.plugin.table.listener = watchdog
    out = {"mode": "paired", "signal": watchdog.signal, "rounds": rounds, "class_untouched": _class_untouched(cls),
           "routed": probe.plugin.table.router is not None}
    for (config, kind), values in times.items():
        out[f"{kind}.{config}_us"] = statistics.median(values)
        if config != "off":  # the per-round difference, then its median: the pairing
            out[f"{kind}.{config}_added_us"] = statistics.median(
                v - off for v, off in zip(values, times[("off", kind)]))
    return out


def _per_call(fn, n=2000):
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def child_overhead(mode: str) -> dict:
    """Per-context cost in one process: an empty ``with use_symmetric_memory(group)`` opened as a TP all-reduce
    opens it (the TP group, code the plugin does not know) and as a CP all-gather does (the CP group, code the
    watchdog watches), median of 20 rounds of 2000; and the readings the watchdog can use."""
    from gpu_pool_probe import setup

    torch, pa, cp_utils, tp, cp, tp_comm, cp_comm, usm = setup("unpatched" if mode == "off" else "plugin")

    def per_call_us(fn, n=2000, rounds=20):
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - started) / n * 1e6)
        return statistics.median(times)

    def tp_all_reduce_context():  # opened by code the plugin does not know, on the TP group
        with usm(tp):
            pass

    opener = cp_utils.use_symmetric_memory  # with the plugin on: its opener, as the CP all-gathers call it

    def cp_all_gather_context():  # opened by code the watchdog measures, on the CP group
        with opener(cp):
            pass

    result = {"mode": mode}
    if mode != "off":
        from sglang_cp_symm.engine import activation

        installer, watchdog = activation.current().installer, activation.current().watchdog  # the plugin object's

        watchdog.watch(cp_all_gather_context.__code__)
        if mode == "no-watchdog":
            installer.release("watchdog.context")
        elif mode == "device-memory":
            watchdog.fall_back("the benchmark asked for the fallback")
        watchdog.between_requests()  # the first reading: the counter is found and proven, or the baseline
        cp_all_gather_context()
        result["signal"] = watchdog.signal if mode != "no-watchdog" else "none"
        result["signal_note"] = watchdog.signal_note
        if watchdog._counts is not None:
            reader = watchdog._counts.reader()
            result["probe_counter_us"] = per_call_us(reader)
    result["tp_context_us"] = per_call_us(tp_all_reduce_context)
    result["cp_context_us"] = per_call_us(cp_all_gather_context)
    from sglang_cp_symm.engine.watchdog import device_used_bytes

    result["probe_device_used_bytes_us"] = per_call_us(device_used_bytes)
    return result


def print_paired(runs: list) -> None:
    """The table of issue 23 from ``child_paired`` processes: per context kind, each configuration's time and what
    it adds over the plugin off, the medians over the processes of each process's median."""
    print(f"watchdog cost per empty symmetric context, {len(runs)} processes, every configuration in each "
          f"(per process: median of {runs[0]['rounds']} rounds x 2000; added: median of the per-round differences)")
    print(f"{'context':<30} {'configuration':<70} {'us (processes)':>24} {'median':>7} {'added':>22} {'median':>7}")
    for kind, label in (("cp", "a CP all-gather's"), ("tp", "any other (a TP all-reduce's)")):
        for config in PAIRED_CONFIGS:
            us = [r[f"{kind}.{config}_us"] for r in runs]
            added = [r.get(f"{kind}.{config}_added_us") for r in runs]
            shown_added = "" if config == "off" else "/".join(f"{a:+.2f}" for a in added)
            med_added = "" if config == "off" else f"{statistics.median(added):+.2f}"
            print(f"{label:<30} {OVERHEAD_MODES[config]:<70} {'/'.join(f'{u:.2f}' for u in us):>24} "
                  f"{statistics.median(us):>7.2f} {shown_added:>22} {med_added:>7}")
    print(f"signal: {', '.join(sorted({r['signal'] for r in runs}))}; CP contexts routed to the CP pool: "
          f"{all(r['routed'] for r in runs)}; sglang's SymmetricMemoryContext untouched: "
          f"{all(r['class_untouched'] for r in runs)}")


def print_profile(prof: dict) -> None:
    print(f"profile, one process (us per call, medians of 20 x 2000; sglang's class untouched: "
          f"{prof['class_untouched']}):")
    for k, v in prof.items():
        if isinstance(v, float):
            print(f"  {k:<72} {v:8.3f}")


def run_child(*args) -> dict:
    # Each configuration compiles sglang's allocator in a folder of its own (sglang builds it under
    # tempfile.gettempdir()): the plugin's counting source and sglang's own would rebuild each other's.
    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), "cp-symm-bench-" + ("off" if "off" in args else "on"))
    os.makedirs(tmp, exist_ok=True)
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env=dict(os.environ, TMPDIR=tmp), timeout=600)
    if out.returncode:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    line = out.stdout.strip().splitlines()[-1]
    print(line, file=sys.stderr)
    return json.loads(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs="*")
    parser.add_argument("--max-tokens", type=int, nargs="*", default=[8192, 32768])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-only", action="store_true", help="only part 2, the watchdog's cost")
    parser.add_argument("--profile", action="store_true", help="also where a context's time goes (one process)")
    parser.add_argument("--paired-only", action="store_true",
                        help="only the watchdog's cost, every configuration in each of --repeats processes")
    args = parser.parse_args()
    if args.child is not None:
        pin_cpu()
        if args.child[0] == "profile":
            print(json.dumps(child_profile()))
        elif args.child[0] == "paired":
            print(json.dumps(child_paired()))
        elif args.child[0] == "overhead":
            print(json.dumps(child_overhead(args.child[1])))
        else:
            print(json.dumps(child_first_call(args.child[0], int(args.child[1]))))
        return
    import torch

    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, NCCL {torch.cuda.nccl.version()}")
    if args.paired_only:
        print_paired([run_child("paired") for _ in range(args.repeats)])
        if args.profile:
            print_profile(run_child("profile"))
        return
    print(f"{'tokens':>7} {'KV MiB':>7} {'cold first ms':>14} {'warm first ms':>14} {'hit ms':>7}")
    for tokens in [] if args.overhead_only else args.max_tokens:
        cold = [run_child("cold", str(tokens)) for _ in range(args.repeats)]
        warm = [run_child("warm", str(tokens)) for _ in range(args.repeats)]
        fmt = lambda rows, key: "/".join(f"{r[key]:.2f}" for r in rows)  # noqa: E731
        print(f"{tokens:>7} {tokens * 1152 / 2**20:>7.1f} {fmt(cold, 'first_ms'):>14} {fmt(warm, 'first_ms'):>14} "
              f"{statistics.median(r['hit_median_ms'] for r in warm):>7.3f}")
    rows = {m: [] for m in OVERHEAD_MODES}
    for _ in range(args.repeats):  # paired: every mode once per round, in fresh processes, in turn
        for m in OVERHEAD_MODES:
            rows[m].append(run_child("overhead", m))
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("tp_context_us", "cp_context_us")}
           for m, rs in rows.items()}
    runs = lambda m, k: "/".join(f"{r[k]:.2f}" for r in rows[m])  # noqa: E731
    print(f"watchdog cost per empty symmetric context, medians of {args.repeats} processes (each: median of 20 x 2000)")
    print(f"{'context':<26} {'configuration':<70} {'us (runs)':>22} {'median':>7} {'added':>7}")
    for key, kind in (("cp_context_us", "a CP all-gather's"), ("tp_context_us", "any other (a TP all-reduce's)")):
        for m, label in OVERHEAD_MODES.items():
            added = "" if m == "off" else f"{med[m][key] - med['off'][key]:+.2f}"
            print(f"{kind:<26} {label:<70} {runs(m, key):>22} {med[m][key]:>7.2f} {added:>7}")
    if args.profile:
        print_profile(run_child("profile"))
    signals = sorted({r.get("signal", "") for r in rows["counter"]})
    print(f"signal in the default configuration: {', '.join(signals)}; readings: allocator counter "
          f"{statistics.median(r['probe_counter_us'] for r in rows['counter'] if 'probe_counter_us' in r):.3f} us, "
          f"device_used_bytes (cudaMemGetInfo) "
          f"{statistics.median(r['probe_device_used_bytes_us'] for rs in rows.values() for r in rs):.2f} us")

if __name__ == "__main__":
    main()
