"""Benchmark (not a test): what staging the CP all-gather's send buffer costs on one GPU.

Times ``cp_symm_stage_send`` (an allocation from sglang's warm symmetric pool plus a
device-to-device copy) with CUDA events, median of many calls, for the per-rank
all-gather input of two models' KV shapes at 4K-128K tokens of context, so the
multi-GPU run (issue 6) can weigh it against the symmetric kernel's gain.

Shapes per token (bf16): DeepSeek-V3.2 MLA latent KV = kv_lora_rank 512 + rope 64
= 576 values (config.json of deepseek-ai/DeepSeek-V3.2); Qwen3-30B-A3B K (or V)
= 4 KV heads x 128 head_dim = 512 values (its config.json), gathered once for K
and once for V per layer. Per-rank input rows = ceil(tokens / cp).

Run on the device machine (sglang 0.5.11 importable, see docs/gpu-runs.md):
    python3 bench/staging_cost.py
"""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "engine"))

MODELS = {"DeepSeek-V3.2 latent KV": (1, 576), "Qwen3-30B-A3B K (or V)": (4, 128)}
TOKENS = [4096, 8192, 16384, 32768, 65536, 131072]
CP_SIZES = [2, 8]


def main() -> None:
    import gpu_pool_probe

    torch, _pa, _cp_utils, _tp, cp, _tp_comm, _cp_comm, _ = gpu_pool_probe.setup("send")
    from sglang_cp_symm.engine.send_staging import cp_symm_stage_send

    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, NCCL {torch.cuda.nccl.version()}")
    print(f"{'model':<26} {'tokens':>7} {'cp':>3} {'input MiB':>10} {'stage us':>9} {'GB/s':>7} {'copy-only us':>13}")
    for model, (heads, dim) in MODELS.items():
        for tokens in TOKENS:
            for cp_size in CP_SIZES:
                rows = -(-tokens // cp_size)
                x = torch.randn(rows, heads, dim, device="cuda", dtype=torch.bfloat16)
                nbytes = x.numel() * x.element_size()
                times, copy_times = [], []
                for i in range(60):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    staged = cp_symm_stage_send(x, cp, None)
                    end.record()
                    torch.cuda.synchronize()
                    assert staged is not x
                    if i >= 10:
                        times.append(start.elapsed_time(end) * 1000)
                    dst = torch.empty_like(x)
                    start.record()
                    dst.copy_(x)
                    end.record()
                    torch.cuda.synchronize()
                    if i >= 10:
                        copy_times.append(start.elapsed_time(end) * 1000)
                    del staged, dst
                t = statistics.median(times)
                print(f"{model:<26} {tokens:>7} {cp_size:>3} {nbytes / 2**20:>10.2f} {t:>9.1f} "
                      f"{2 * nbytes / t / 1e3:>7.0f} {statistics.median(copy_times):>13.1f}")


if __name__ == "__main__":
    main()
