"""What the GPU path needs beyond sglang's own groups: one-rank communicators, the pre-allocation, timing.

With two or more ranks everything is sglang's: ``GroupCoordinator`` with its ``PyNcclCommunicator``, its
allocator (``get_nccl_mem_pool``: ``ncclMemAlloc`` plus ``ncclCommWindowRegister``), its
``SymmetricMemoryContext``. "--enable-symm-mem semantics" is ``is_symmetric_memory_enabled`` answering
True, set on ``pynccl_allocator`` before the groups are built (``GroupCoordinator`` binds it then).

One GPU and one rank (the dry run on the one-GPU machine): sglang creates no NCCL communicator for a
one-rank group and opens no symmetric context for it (``use_symmetric_memory`` returns ``nullcontext``
when ``world_size == 1``), so, as ``tests/engine/gpu_pool_probe.py`` does, each group gets a one-rank
communicator from sglang's own ``NCCLLibrary`` and the gate is lifted; the gather then runs
``ncclAllGather`` on that communicator on the caller's stream. NCCL runs a one-rank collective as a copy
and logs no tuning line for it, so the kernel columns stay empty at N = 1.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any, Callable, List


def enable_symmetric_memory() -> None:
    from sglang.srt.distributed.device_communicators import pynccl_allocator as pa

    pa.is_symmetric_memory_enabled = lambda: True


def one_rank_communicator(group) -> Any:
    """Give a one-rank ``GroupCoordinator`` an NCCL communicator and a stream-ordered all-gather on it."""
    import torch
    from sglang.srt.distributed.device_communicators.pynccl_wrapper import (
        NCCLLibrary,
        buffer_type,
        cudaStream_t,
        ncclDataTypeEnum,
    )

    lib = NCCLLibrary()
    comm = lib.ncclCommInitRank(1, lib.ncclGetUniqueId(), 0)

    def gather(output, input, stream=None, *rest):
        stream = stream if stream is not None and hasattr(stream, "cuda_stream") else torch.cuda.current_stream()
        lib.ncclAllGather(buffer_type(input.data_ptr()), buffer_type(output.data_ptr()), input.numel(),
                          ncclDataTypeEnum.from_torch(input.dtype), comm, cudaStream_t(stream.cuda_stream))

    group.pynccl_comm = SimpleNamespace(comm=comm, disabled=True)
    group.cp_all_gather_into_tensor_async = gather
    group.all_gather_into_tensor = gather
    return comm


def lift_one_rank_gate() -> int:
    """``use_symmetric_memory`` without its ``world_size == 1`` gate, wherever a module bound it; returns how
    many bindings were replaced."""
    from sglang.srt.distributed.device_communicators import pynccl_allocator as pa

    original = pa.use_symmetric_memory

    def use_symmetric_memory(group_coordinator, disabled=False):
        if disabled or not pa.is_symmetric_memory_enabled():
            return nullcontext()
        return pa.SymmetricMemoryContext(group_coordinator)

    replaced = 0
    for module in list(sys.modules.values()):
        if module is not None and getattr(module, "use_symmetric_memory", None) is original:
            module.use_symmetric_memory = use_symmetric_memory
            replaced += 1
    return replaced


def preallocate(tp, gib: float) -> None:
    """sglang's pre-allocation (``prealloc_symmetric_memory_pool``; model_runner.py 0.5.11:3411-3424): one
    block under the TP group's context, freed at once, so the shared pool holds one large segment."""
    if gib <= 0:
        return
    import torch
    from sglang.srt.distributed.device_communicators import pynccl_allocator as pa

    with pa.use_symmetric_memory(tp):
        torch.empty(int(gib * (1 << 30)), dtype=torch.uint8, device="cuda")


def timed_calls(fn: Callable[[], Any], iters: int) -> List[float]:
    """Microseconds per call between CUDA events on the current stream (no synchronisation between calls,
    as the engine issues them; the host's launch time is in the figure when the GPU waits for it)."""
    import torch

    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1000.0 for s, e in zip(starts, ends)]


def profiled_calls(fn: Callable[[], Any], calls: int, path: str) -> str:
    """Run ``fn`` ``calls`` times under the PyTorch profiler (CUDA activity) and write its Chrome trace."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    prof.export_chrome_trace(path)
    return path
