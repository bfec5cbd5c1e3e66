"""Benchmark (one GPU, not a test): what the warm-up saves the first long request, and what the watchdog costs.

    python3 bench/warmup_latency.py [--max-tokens 8192 32768] [--repeats 3] [--overhead-only]

1. First-request latency. In fresh processes (sglang's allocator, the plugin's CP pool,
   one-rank communicators; see tests/gpu_pool_probe.py), the first call of the patched
   KV-cache all-gather at the longest length, timed on the host around a synchronised
   call: ``cold`` without warm-up (the call creates the pool segment: ncclMemAlloc plus
   the window registration), ``warm`` after the plugin's warm-up prompts. Both first load
   the kernels with an unpooled gather of the same size, so only the pool differs.
2. The watchdog's cost: one empty ``with use_symmetric_memory(cp)`` with and without the
   watchdog's hook (median of 20 x 2000), and the probes it could use.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "engine"))


def child_first_call(mode: str, max_tokens: int) -> dict:
    from types import SimpleNamespace

    from gpu_pool_probe import setup

    torch, pa, cp_utils, tp, cp, tp_comm, cp_comm, usm = setup("plugin")
    from sglang_cp_symm.engine.sizing import ModelShape, small_pool_tokens

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


def child_overhead() -> dict:
    from gpu_pool_probe import setup

    torch, pa, cp_utils, tp, cp, tp_comm, cp_comm, usm = setup("plugin")
    from sglang_cp_symm.engine.hooks import INSTALLER
    from sglang_cp_symm.engine.watchdog import device_used_bytes

    def per_call_us(fn, n=2000, rounds=20):
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(n):
                fn()
            times.append((time.perf_counter() - started) / n * 1e6)
        return statistics.median(times)

    def empty_context():  # opened by code the plugin does not know (as a TP all-reduce's is)
        with usm(cp):
            pass

    def watched_context():  # opened by code the watchdog measures (as a CP all-gather's is)
        with usm(cp):
            pass

    from sglang_cp_symm.engine.watchdog import WATCHDOG

    WATCHDOG.watch(watched_context.__code__)
    result = {"context_with_watchdog_us": per_call_us(empty_context),
              "watched_context_with_watchdog_us": per_call_us(watched_context)}
    result["probe_device_used_bytes_us"] = per_call_us(device_used_bytes)
    result["probe_allocator_stats_us"] = per_call_us(lambda: torch._C._cuda_memoryStats(0))
    result["probe_memory_reserved_us"] = per_call_us(torch.cuda.memory_reserved)
    result["probe_mem_get_info_us"] = per_call_us(torch.cuda.mem_get_info)
    INSTALLER.release("watchdog.context")
    result["context_without_watchdog_us"] = per_call_us(empty_context)
    result["watched_context_without_watchdog_us"] = per_call_us(watched_context)
    result["watchdog_us_per_context"] = result["context_with_watchdog_us"] - result["context_without_watchdog_us"]
    result["watchdog_us_per_watched_context"] = (result["watched_context_with_watchdog_us"]
                                                 - result["watched_context_without_watchdog_us"])
    return result


def run_child(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env=dict(os.environ), timeout=600)
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
    args = parser.parse_args()
    if args.child is not None:
        if args.child[0] == "overhead":
            print(json.dumps(child_overhead()))
        else:
            print(json.dumps(child_first_call(args.child[0], int(args.child[1]))))
        return
    import torch

    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, NCCL {torch.cuda.nccl.version()}")
    print(f"{'tokens':>7} {'KV MiB':>7} {'cold first ms':>14} {'warm first ms':>14} {'hit ms':>7}")
    for tokens in [] if args.overhead_only else args.max_tokens:
        cold = [run_child("cold", str(tokens)) for _ in range(args.repeats)]
        warm = [run_child("warm", str(tokens)) for _ in range(args.repeats)]
        fmt = lambda rows, key: "/".join(f"{r[key]:.2f}" for r in rows)  # noqa: E731
        print(f"{tokens:>7} {tokens * 1152 / 2**20:>7.1f} {fmt(cold, 'first_ms'):>14} {fmt(warm, 'first_ms'):>14} "
              f"{statistics.median(r['hit_median_ms'] for r in warm):>7.3f}")
    o = run_child("overhead")
    print("watchdog: a CP all-gather's empty symmetric context {:.2f} us with it, {:.2f} us without ({:+.2f} us)".format(
        o["watched_context_with_watchdog_us"], o["watched_context_without_watchdog_us"],
        o["watchdog_us_per_watched_context"]))
    print("watchdog: any other empty symmetric context {:.2f} us with it, {:.2f} us without ({:+.2f} us); probes: "
          "device_used_bytes {:.2f} us, allocator stats {:.2f} us, torch.cuda.memory_reserved {:.2f} us, "
          "torch.cuda.mem_get_info {:.2f} us".format(
              o["context_with_watchdog_us"], o["context_without_watchdog_us"], o["watchdog_us_per_context"],
              o["probe_device_used_bytes_us"], o["probe_allocator_stats_us"], o["probe_memory_reserved_us"],
              o["probe_mem_get_info_us"]))


if __name__ == "__main__":
    main()
