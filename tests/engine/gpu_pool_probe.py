"""GPU probe (stage C): the patched CP all-gather's output in sglang's real symmetric pool, one GPU.

Run as ``python tests/gpu_pool_probe.py MODE`` with MODE one of ``unpatched``,
``shared-pool`` (output patch only, sglang's shared pool), ``plugin`` (the
plugin's default: output patch plus the CP group's own pool; both judged as for
NCCL 2.30.7, where nothing races), ``send`` (staging, with the race allowance on
the machine's own NCCL) and ``guard`` (the plugin's default on the machine's own
NCCL: on 2.28.0-2.30.6 the race guard holds every CP context); prints one JSON line.

Everything is sglang's own: its allocator source compiled by its
``get_nccl_mem_pool()``, its ``SymmetricMemoryContext``, ``GroupCoordinator`` and
``cp_utils``. What one GPU cannot provide is lifted, and only that: sglang
creates no NCCL communicator for a one-rank group and opens no symmetric context
for it (``use_symmetric_memory`` returns ``nullcontext`` when ``world_size == 1``
or ``--enable-symm-mem`` is off), so the probe makes a one-rank NCCL communicator
per group with sglang's own ``NCCLLibrary`` and lets ``use_symmetric_memory``
open sglang's real context for such a group. The group's CP all-gather then runs
``ncclAllGather`` on that communicator on the caller's stream, as sglang's pynccl
communicator does when symmetric memory is on (``GroupCoordinator._all_gather_into_tensor``):
stream-ordered, so a freed pool block is reusable at once. (torch.distributed's
path, which a one-rank group would otherwise take, keeps each output alive until
its own NCCL stream is done, and so needs more pool than a server does.)
"""

import json
import os
import sys
from contextlib import nullcontext
from types import SimpleNamespace


def setup(mode: str):
    """One GPU, two one-rank NCCL groups (TP and attention-CP), sglang's real pool; the plugin per ``mode``.

    Returns (torch, pa, cp_utils, tp, cp, tp_comm, cp_comm, use_symmetric_memory).
    """
    import torch
    from sglang.srt.distributed import parallel_state as ps
    from sglang.srt.distributed.device_communicators import pynccl_allocator as pa
    from sglang.srt.distributed.device_communicators.pynccl_wrapper import NCCLLibrary

    torch.cuda.set_device(0)
    ps.init_distributed_environment(
        world_size=1, rank=0, distributed_init_method="tcp://127.0.0.1:29517", local_rank=0, backend="nccl"
    )
    from sglang.srt.distributed.device_communicators.pynccl_wrapper import (
        buffer_type,
        cudaStream_t,
        ncclDataTypeEnum,
    )

    lib = NCCLLibrary()

    def stream_ordered_gather(comm):
        def gather(output, input, stream=None):
            stream = stream or torch.cuda.current_stream()
            lib.ncclAllGather(buffer_type(input.data_ptr()), buffer_type(output.data_ptr()), input.numel(),
                              ncclDataTypeEnum.from_torch(input.dtype), comm, cudaStream_t(stream.cuda_stream))

        return gather

    def group(name):
        g = ps.init_model_parallel_group([[0]], 0, "nccl", use_pynccl=False, use_custom_allreduce=False, group_name=name)
        comm = lib.ncclCommInitRank(1, lib.ncclGetUniqueId(), 0)
        g.pynccl_comm = SimpleNamespace(comm=comm, disabled=True)
        g.cp_all_gather_into_tensor_async = stream_ordered_gather(comm)
        return g, comm

    tp, tp_comm = group("tp")
    cp, cp_comm = group("attn_cp")
    ps._TP, ps._ATTN_CP = tp, cp

    def use_symmetric_memory(group_coordinator, disabled=False):  # the one-rank gate, lifted
        return nullcontext() if disabled else pa.SymmetricMemoryContext(group_coordinator)

    pa.use_symmetric_memory = use_symmetric_memory
    from sglang.srt.layers.utils import cp_utils

    if "use_symmetric_memory" in vars(cp_utils):
        cp_utils.use_symmetric_memory = use_symmetric_memory

    if mode != "unpatched":
        import sglang_cp_symm
        from sglang_cp_symm.engine.settings import Settings

        # "send": staging on; the race allowance only lets the policy stage on this machine's NCCL 2.28,
        # a one-rank communicator runs no symmetric kernel across GPUs.
        send = mode == "send"
        mechanics = mode in ("plugin", "shared-pool")  # the patch itself, judged where no NCCL line races
        sglang_cp_symm.patch(Settings(enabled=True, send=send, allow_nccl_race=send),
                             nccl="2.30.7" if mechanics else None)
        if mode == "shared-pool":
            from sglang_cp_symm.engine import activation

            activation.current().table.router = None  # output patch only: no CP pool

    # sglang's pre-allocation, as ModelRunner does it: under the TP group, then freed (cached in the pool).
    with use_symmetric_memory(tp):
        torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    return torch, pa, cp_utils, tp, cp, tp_comm, cp_comm, use_symmetric_memory


def main(mode: str) -> dict:
    torch, pa, cp_utils, tp, cp, tp_comm, cp_comm, use_symmetric_memory = setup(mode)
    shared_after_prealloc = len(pa._mem_pool.snapshot())

    seen = {}
    original_gather = cp.cp_all_gather_into_tensor_async

    def observe(output, input, stream):
        seen["out"] = output.untyped_storage().data_ptr()
        seen["in"] = input.untyped_storage().data_ptr()
        seen["comm_env"] = os.environ.get("SGLANG_TMP_NCCL_COMM_VALUE")
        return original_gather(output, input, stream)

    cp.cp_all_gather_into_tensor_async = observe
    fn = cp_utils.cp_all_gather_reorganized_into_tensor_kv_cache
    x = torch.randn(8192, 1, 576, device="cuda", dtype=torch.bfloat16)  # DeepSeek-style latent KV, 8K tokens
    meta = cp_utils.ContextParallelMetadata(max_rank_len=[8192], per_rank_actual_token=[8192])
    batch = SimpleNamespace(attn_cp_metadata=meta)
    out = fn(x, 8192, 1, batch, torch.cuda.current_stream())
    torch.cuda.synchronize()

    def in_pool(ptr, pool):
        """By address range: once freed, a block may have merged into its neighbour in the snapshot."""
        return any(s["address"] <= ptr < s["address"] + s["total_size"] for s in (pool.snapshot() if pool else []))

    from sglang_cp_symm.engine import activation
    from sglang_cp_symm.engine import pool as cp_pools

    plugin = activation.current()  # None where the probe ran unpatched: then no pool of the plugin's
    own = plugin.cp_pools.get(id(cp)) if plugin is not None else None
    kv_out, kv_in = seen["out"], seen["in"]
    first = {"output_in_cp_pool": in_pool(kv_out, own), "input_in_cp_pool": in_pool(kv_in, own)}
    # Many more calls: a staging or output buffer that leaked would grow the pool.
    reserved_after_first = cp_pools.pool_stats(own)["reserved_bytes"] if own else 0
    for _ in range(200):
        fn(x, 8192, 1, batch, torch.cuda.current_stream())
    torch.cuda.synchronize()
    # upstream's own registered gather (0.5.11 wrote its context): in a pool, unless the race guard holds it
    x2 = torch.randn(8192, 576, device="cuda", dtype=torch.bfloat16)
    cp_utils.cp_all_gather_reorganized_into_tensor(x2, 8192, 1, batch, torch.cuda.current_stream())
    torch.cuda.synchronize()
    upstream_out = seen["out"]
    status = __import__("sglang_cp_symm").status() if mode != "unpatched" else {}
    return {
        "mode": mode,
        "upstream_output_in_a_pool": in_pool(upstream_out, pa._mem_pool) or in_pool(upstream_out, own),
        "race_guard": status.get("race_guard"),
        "outcome": status.get("outcome"),
        "sglang": __import__("sglang").__version__,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())),
        "correct": bool(torch.equal(out, x)),
        "output_in_shared_pool": in_pool(kv_out, pa._mem_pool),
        "output_in_cp_pool": first["output_in_cp_pool"],
        "input_in_cp_pool": first["input_in_cp_pool"],
        "input_in_shared_pool": in_pool(kv_in, pa._mem_pool),
        "cp_pool_reserved_after_1_call": reserved_after_first,
        "cp_pool_reserved_after_201_calls": cp_pools.pool_stats(own)["reserved_bytes"] if own else 0,
        "cp_pool_allocated_after_201_calls": cp_pools.pool_stats(own)["allocated_bytes"] if own else 0,
        "shared_pool_segments": len(pa._mem_pool.snapshot()),
        "shared_segments_after_prealloc": shared_after_prealloc,
        "cp_pool_segments": len(own.snapshot()) if own else 0,
        "comm_when_gathering_is_cp": seen["comm_env"] == str(cp_comm.value),
        "tp_comm": tp_comm.value,
        "cp_comm": cp_comm.value,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
