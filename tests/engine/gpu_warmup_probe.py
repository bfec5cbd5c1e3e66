"""GPU probe (stage C): what the warm-up's prompts do to sglang's real symmetric pool, counted by the real watchdog.

Run as ``python tests/engine/gpu_warmup_probe.py MODE MAX_TOKENS``; prints one JSON line.
MODE is the warm-up run before the sweep:
- ``none``: no warm-up;
- ``max``: one gather of the longest prompt (the issue's floor);
- ``full``: what ``warmup.plan_for`` sends: the longest prompt, then the short lengths of
  ``allocator_model.small_pool_tokens`` for this shape.
Then the sweep: one call of the patched KV-cache all-gather for every length from 1 to
MAX_TOKENS (DeepSeek-style latent KV rows, 576 bf16 elements), as the serving phase.

``python tests/engine/gpu_warmup_probe.py off CONTEXT_LEN [CAP]``: chunked prefill off on a
server of that context length, planned by the plugin's own code (``scheduler_rules.longest_forward``
with this release's rules, ``warmup.plan_line``, the far-above warning; ``CAP`` plays
``SGLANG_CP_SYMM_WARMUP_TOKENS``), then measured: the pool growth the warm-up's prompts
cause (bytes, segments, the watchdog's count) next to the bytes the plan said its CP
buffers need, and a sweep up to the scheduler's largest forward (every length up to
2048, then a stride that keeps it near 32768 calls, and the largest), whose growth is
what a capped warm-up said it leaves.

Everything is sglang's own (the allocator it compiles, its ``SymmetricMemoryContext``,
``GroupCoordinator``, ``cp_utils``) plus the plugin as installed by ``patch()``: the
output patch, the CP group's pool (0.5.9-0.5.11) and the watchdog around the contexts the
register's modules open. What one GPU cannot provide is lifted as in ``gpu_pool_probe.setup``: one-rank
NCCL communicators, and the gate that keeps sglang from opening a symmetric context for a
one-rank group. The server side of the warm-up (named warm-up, scheduler fan-out) needs a
whole server and is covered by the CPU tests; here the warm-up is its plan, run through
the patched gather in the order the server runs it.
"""

import json
import sys
import time

from gpu_pool_probe import setup

LATENT_KV_ELEMENTS = 576  # DeepSeek V3.x: kv_lora_rank 512 + qk_rope_head_dim 64


def main(mode: str, max_tokens: int) -> dict:
    torch, pa, cp_utils, tp, cp, tp_comm, cp_comm, _ = setup("plugin")
    from types import SimpleNamespace

    from sglang_cp_symm.engine import activation
    from sglang_cp_symm.engine import pool as cp_pools
    from sglang_cp_symm.engine.allocator_model import ModelShape, small_pool_tokens
    from sglang_cp_symm.engine.watchdog import SERVING, START, WARMUP

    plugin = activation.current()  # the plugin object: its hook installer, watchdog and CP pools
    installer, watchdog = plugin.installer, plugin.watchdog

    assert installer.describe().get("watchdog.context") == "installed", installer.describe()
    fn = cp_utils.cp_all_gather_reorganized_into_tensor_kv_cache
    stream = torch.cuda.current_stream()
    shape = ModelShape("latent-kv-bf16", {"latent_kv": LATENT_KV_ELEMENTS * 2})

    def gather(n: int, check: bool = False) -> bool:
        x = torch.randn(n, 1, LATENT_KV_ELEMENTS, device="cuda", dtype=torch.bfloat16)
        meta = cp_utils.ContextParallelMetadata(max_rank_len=[n], per_rank_actual_token=[n])
        out = fn(x, n, 1, SimpleNamespace(attn_cp_metadata=meta), stream)
        return bool(torch.equal(out, x)) if check else True

    def pools():
        """Segments and MiB of every symmetric pool: sglang's shared one and the plugin's CP pool."""
        found = {"shared": pa._mem_pool, **{f"cp{i}": p for i, p in enumerate(plugin.cp_pools.values())}}
        return {name: cp_pools.pool_stats(p) for name, p in found.items() if p is not None}

    prompts = {"none": [], "max": [max_tokens],
               "full": [max_tokens] + small_pool_tokens(shape, 1, max_tokens)}[mode]
    start_growths = watchdog.counts[START]
    counter = lambda: watchdog._counts.snapshot() if watchdog._counts is not None else None  # noqa: E731
    watchdog.between_requests()  # the first reading after the pool exists: the counter is found and proven here
    counts_before_warmup = counter()
    for n in prompts:
        watchdog.begin_warmup(n)
        gather(n)
    torch.cuda.synchronize()
    if prompts:
        watchdog.finish_warmup()
    else:
        watchdog.traffic()
    after_warmup = pools()
    counts_after_warmup = counter()

    import gc
    import os

    if os.environ.get("CP_SYMM_PROBE_NO_WATCHDOG"):  # diagnosis: the sweep without the watchdog's hook
        installer.release("watchdog.context")
    sync_each = bool(os.environ.get("CP_SYMM_PROBE_SYNC"))  # diagnosis: one call at a time on the GPU
    started = time.perf_counter()
    correct = True
    for n in range(1, max_tokens + 1):
        correct &= gather(n, check=n in (1, 2, 909, 910, 911, max_tokens // 2, max_tokens))
        if sync_each:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    after_sweep = pools()
    counts_after_sweep = counter()
    gc.collect()
    live_blocks = [(b["size"], b["state"]) for p in plugin.cp_pools.values() for seg in p.snapshot()
                   for b in seg["blocks"] if b["state"] != "inactive"]
    segments = lambda state: sum(s["segments"] for s in state.values())  # noqa: E731
    return {
        "mode": mode,
        "sglang": __import__("sglang").__version__,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())),
        "max_tokens": max_tokens,
        "warmup_prompts": prompts,
        "warmup_growths": watchdog.counts[WARMUP],
        "start_growths": start_growths,
        "sweep_calls": max_tokens,
        "sweep_growths": watchdog.counts[SERVING],
        "sweep_new_segments": segments(after_sweep) - segments(after_warmup),
        "pools_after_warmup": after_warmup,
        "pools_after_sweep": after_sweep,
        "growth_sites": sorted({e.site.rsplit("/", 1)[-1] for e in watchdog.events if e.phase == SERVING}),
        "growth_mib": [round(e.grown_bytes / 2**20, 1) for e in watchdog.events if e.phase == SERVING],
        "live_cp_blocks_after_gc": live_blocks,
        "sweep_seconds": round(seconds, 2),
        "correct": correct,
        # the allocator's counter (alloc_counter), read independently of the watchdog's bookkeeping
        "signal": watchdog.signal,
        "signal_note": watchdog.signal_note,
        "counter_warmup_allocations": (counts_after_warmup[0] - counts_before_warmup[0]) if counts_before_warmup
        else None,
        "counter_sweep_allocations": (counts_after_sweep[0] - counts_after_warmup[0]) if counts_after_warmup
        else None,
        "counter_sweep_frees": (counts_after_sweep[2] - counts_after_warmup[2]) if counts_after_warmup else None,
        "counter_net_segments": (counts_after_sweep[0] - counts_after_sweep[2]) if counts_after_sweep else None,
        "snapshot_segments": segments(after_sweep),
        "sweep_growth_allocations": sum(e.allocations for e in watchdog.events if e.phase == SERVING),
    }


def plan_chunking_off(context_len: int, cap=None, page_size: int = 1):
    """The plugin's plan for a chunking-off server of ``context_len`` tokens (no KV pool reported: one GPU
    runs no scheduler), for the latent-KV gather of this probe, CP 1."""
    from sglang_cp_symm.engine.allocator_model import ModelShape, size_pool
    from sglang_cp_symm.engine.scheduler_rules import longest_forward
    from sglang_cp_symm.engine.warmup import WarmupPlan, far_above_warning, plan_line
    from sglang_cp_symm.engine.warmup_fanout import warmup_deadline
    from sglang_cp_symm.releases import installed_sglang

    release = installed_sglang()
    shape = ModelShape("latent-kv-bf16", {"latent_kv": LATENT_KV_ELEMENTS * 2})
    forward = longest_forward(-1, page_size, context_len=context_len, release=release, override=cap)
    sized = size_pool(forward, 1, shape, False, release, None, plugin_on=True)
    plan = WarmupPlan(prompts=[forward.prompt, *sized.short_prompts], dp_size=1, cp_size=1, route_field=None,
                      vocab_size=32000, forward=forward, pool_source="not asked (one GPU, no scheduler)", sizing=sized)
    return plan, plan_line(plan, warmup_deadline(None), True), far_above_warning(plan)


def main_chunking_off(context_len: int, cap=None) -> dict:
    torch, pa, cp_utils, tp, cp, tp_comm, cp_comm, _ = setup("plugin")
    from types import SimpleNamespace

    from sglang_cp_symm.engine import activation
    from sglang_cp_symm.engine import pool as cp_pools
    from sglang_cp_symm.engine.watchdog import SERVING, WARMUP

    plugin = activation.current()  # the plugin object: its watchdog and CP pools
    watchdog = plugin.watchdog

    plan, line, warning = plan_chunking_off(context_len, cap)
    fwd, sized = plan.forward, plan.sizing
    fn = cp_utils.cp_all_gather_reorganized_into_tensor_kv_cache
    stream = torch.cuda.current_stream()
    source = torch.randn(fwd.scheduler_tokens, 1, LATENT_KV_ELEMENTS, device="cuda", dtype=torch.bfloat16)

    def gather(n: int, check: bool = False) -> bool:
        x = source[:n]  # one input buffer, sliced: the sweep measures the pool, not the random generator
        meta = cp_utils.ContextParallelMetadata(max_rank_len=[n], per_rank_actual_token=[n])
        out = fn(x, n, 1, SimpleNamespace(attn_cp_metadata=meta), stream)
        return bool(torch.equal(out, x)) if check else True

    def reserved():
        pools = {"shared": pa._mem_pool, **{f"cp{i}": p for i, p in enumerate(plugin.cp_pools.values())}}
        stats = [cp_pools.pool_stats(p) for p in pools.values() if p is not None]
        return sum(s["reserved_bytes"] for s in stats), sum(s["segments"] for s in stats)

    before, seg_before = reserved()
    started = time.perf_counter()
    for n in plan.prompts:
        watchdog.begin_warmup(n)
        gather(n)
    torch.cuda.synchronize()
    warmup_seconds = time.perf_counter() - started
    watchdog.finish_warmup()
    after, seg_after = reserved()
    largest = fwd.scheduler_tokens
    stride = max(1, (largest - 2048) // 30720)
    lengths = list(range(1, min(largest, 2048) + 1)) + list(range(2048 + stride, largest, stride)) + [largest]
    correct = True
    started = time.perf_counter()
    for n in lengths:
        correct &= gather(n, check=n in (1, 910, 911, plan.prompts[0], largest))
    torch.cuda.synchronize()
    sweep_seconds = time.perf_counter() - started
    swept, seg_swept = reserved()
    mib = lambda b: round(b / 2**20, 1)  # noqa: E731
    return {
        "mode": "off", "sglang": __import__("sglang").__version__,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())), "context_len": context_len, "cap": cap,
        "planned": {"longest_forward": fwd.tokens, "scheduler_largest": fwd.scheduler_tokens, "source": fwd.source,
                    "prompts": plan.prompts, "need_mib": mib(sized.need_bytes), "left_mib": mib(sized.left_bytes),
                    "growth_mib": mib(sized.growth_bytes), "prealloc": sized.prealloc["state"],
                    "left_most_mib": mib(sized.left_most[0]), "left_most_growths": sized.left_most[1],
                    "capped": fwd.capped, "plan_line": line, "warning": warning},
        "measured": {"warmup_growth_mib": mib(after - before), "warmup_new_segments": seg_after - seg_before,
                     "warmup_growths": watchdog.counts[WARMUP], "warmup_seconds": round(warmup_seconds, 2),
                     "sweep_calls": len(lengths), "sweep_stride": stride, "sweep_growth_mib": mib(swept - after),
                     "sweep_new_segments": seg_swept - seg_after, "sweep_growths": watchdog.counts[SERVING],
                     "sweep_seconds": round(sweep_seconds, 2), "pool_mib_after_sweep": mib(swept)},
        "correct": correct,
    }


if __name__ == "__main__":
    if sys.argv[1] == "off":
        cap = int(sys.argv[3]) if len(sys.argv) > 3 else None
        print(json.dumps(main_chunking_off(int(sys.argv[2]), cap)))
    else:
        print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
