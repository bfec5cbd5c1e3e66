"""Where a gather's buffers were: in which symmetric context (CPU) or which registered pool (GPU).

CPU: there is no symmetric memory, so the rehearsal's stand-ins record it
(``sglang_cp_symm.tools.rehearsal.Recorder``): ``install_context`` (sglang's ``SymmetricMemoryContext``
replaced by a recorder that notes which group's context is open), ``install_all_gather`` (a CPU
kernel for ``sglang::reg_all_gather_into_tensor`` that records the output and input it was handed) and
``allocations`` (every allocation, and the context open at that moment).

GPU: the real pools. A buffer lies in sglang's shared pool (``pynccl_allocator._mem_pool``) or in the
plugin's CP pool (``sglang_cp_symm.engine.activation.current().cp_pools``), told by address range from the pools'
snapshots; the group's all-gather entry points are wrapped, during the correctness sweep only, to read the
pointers they are handed. Which communicator a shared-pool segment is registered with depends on the
release: before 0.5.12 only the one whose context created it (the TP pre-allocation's: the TP
communicator), from 0.5.12 every communicator whose context exits after it was made (PR #21392).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple


def storage_ptr(t) -> int:
    return t.untyped_storage().data_ptr()


class CpuObserver:
    """The rehearsal's recorders, around one call."""

    def __init__(self):
        from sglang_cp_symm.tools import rehearsal

        self.rehearsal = rehearsal
        self.recorder = rehearsal.Recorder()
        self.real_context = None
        self.real_enabled = None
        self.keep_alive = None

    def install(self) -> None:
        from sglang.srt.distributed.device_communicators import pynccl_allocator as pa

        self.real_context, self.real_enabled = pa.SymmetricMemoryContext, pa.is_symmetric_memory_enabled
        self.keep_alive = self.recorder.install_all_gather()
        self.recorder.install_context()

    def before_patch(self) -> None:
        """The plugin patches sglang's real context class (its pool fix), as in a real process."""
        from sglang.srt.distributed.device_communicators import pynccl_allocator as pa

        pa.SymmetricMemoryContext, pa.is_symmetric_memory_enabled = self.real_context, self.real_enabled

    def after_patch(self) -> None:
        self.recorder.install_context()

    def call(self, fn, *args) -> Tuple[Any, dict]:
        record = self.rehearsal.CallRecord()
        self.recorder.current = record
        try:
            with self.recorder.allocations(record):
                out = fn(*args)
        finally:
            self.recorder.current = None
        gather_out, gather_in = record.gathers[-1][:2] if record.gathers else (None, None)
        inside = [a for a in record.allocations if a.context is not None]
        seen = {
            "gathers": len(record.gathers),
            "output": "context" if gather_out is not None and any(a.ptr == gather_out for a in inside) else "-",
            "input": "context" if gather_in is not None and any(a.ptr == gather_in for a in inside) else "-",
            "other_inside": sum(1 for a in inside if a.ptr not in (gather_out, gather_in)),
        }
        return out, seen


class GpuObserver:
    """Pool membership of the pointers a group's all-gather is handed (correctness sweep only)."""

    def __init__(self, group):
        self.group = group
        self.seen: List[Tuple[int, int]] = []
        self.saved: Dict[str, Any] = {}

    def install(self) -> None:
        self.depth = 0
        for name in ("all_gather_into_tensor", "cp_all_gather_into_tensor_async"):
            current = getattr(self.group, name)
            self.saved[name] = self.group.__dict__.get(name)

            def observed(output, input, *rest, _current=current):
                # cp_all_gather_into_tensor_async may call all_gather_into_tensor: one collective, seen once
                if self.depth == 0:
                    self.seen.append((storage_ptr(output), storage_ptr(input)))
                self.depth += 1
                try:
                    return _current(output, input, *rest)
                finally:
                    self.depth -= 1

            setattr(self.group, name, observed)

    def uninstall(self) -> None:
        for name, value in self.saved.items():
            if value is None:
                self.group.__dict__.pop(name, None)
            else:
                setattr(self.group, name, value)
        self.saved = {}

    def call(self, fn, *args) -> Tuple[Any, dict]:
        self.seen = []
        out = fn(*args)
        gather_out, gather_in = self.seen[-1] if self.seen else (None, None)
        return out, {"gathers": len(self.seen), "output": pool_of(gather_out), "input": pool_of(gather_in),
                     "other_inside": 0}


def pools() -> Dict[str, Any]:
    """The symmetric pools of this process: sglang's shared one and the plugin's CP pools."""
    found = {}
    try:
        from sglang.srt.distributed.device_communicators import pynccl_allocator as pa

        if getattr(pa, "_mem_pool", None) is not None:
            found["shared"] = pa._mem_pool
    except Exception:
        pass
    try:
        from sglang_cp_symm.engine.activation import current

        for i, pool in enumerate(current().cp_pools.values()):
            found[f"cp{i}" if i else "cp"] = pool
    except Exception:
        pass
    return found


def pool_of(ptr: Optional[int]) -> str:
    if ptr is None:
        return "?"
    for name, pool in pools().items():
        for seg in pool.snapshot():
            if seg["address"] <= ptr < seg["address"] + seg["total_size"]:
                return name
    return "-"


def segments() -> Dict[str, int]:
    return {name: len(pool.snapshot()) for name, pool in pools().items()}
