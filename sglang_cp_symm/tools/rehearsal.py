"""Run the real CP all-gathers of the installed sglang across processes on CPU, and watch the allocations.

This is the plugin's dress rehearsal for machines without a GPU (and the
engine of its tests and of ``sglang-cp-symm demo``). It uses sglang's own code:
``init_distributed_environment`` with gloo, a real ``GroupCoordinator`` for the
attention-CP group installed where ``get_attention_cp_group()`` finds it, and
the unmodified (or patched) ``cp_utils`` functions on real tensors.

Two things cannot exist without a GPU, and are replaced, only they:
- sglang's ``SymmetricMemoryContext`` needs a CUDA ``MemPool`` and an NCCL
  communicator. ``RecordingContext`` stands in: it records which group's
  context is open (and, like torch, refuses to nest on one pool).
- the custom op ``sglang::reg_all_gather_into_tensor`` has a CUDA kernel only;
  a CPU kernel calls the group's own ``_all_gather_into_tensor`` (gloo) and
  records the output and input tensors it was handed.

A ``TorchDispatchMode`` records every tensor the function allocates (any op
output that does not alias an input) and whether a symmetric context was open at
that moment, so a case can prove that the very buffer handed to the all-gather
as output, and nothing else, was allocated inside the attention-CP group's
context.
"""

from __future__ import annotations

import random
import socket
import threading
import traceback
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

@dataclass(frozen=True)
class Gather:
    """One real gather function the rehearsal drives: where it lives and what metadata it reads."""

    module: str
    function: str
    metadata_attr: str
    metadata_class: str
    kv_cache: bool  # 3-D [tokens, heads, dim] input instead of 2-D [tokens, hidden]

    @property
    def label(self) -> str:
        return f"{self.module.rsplit('.', 1)[-1]}.{self.function}"


CP_UTILS = "sglang.srt.layers.utils.cp_utils"
NSA_UTILS = "sglang.srt.layers.attention.nsa.utils"
GATHERS = (
    Gather(CP_UTILS, "cp_all_gather_reorganized_into_tensor", "attn_cp_metadata", "ContextParallelMetadata", False),
    Gather(CP_UTILS, "cp_all_gather_reorganized_into_tensor_kv_cache", "attn_cp_metadata", "ContextParallelMetadata", True),
    Gather(NSA_UTILS, "cp_attn_tp_all_gather_reorganazied_into_tensor", "nsa_cp_metadata", "NSAContextParallelMetadata", False),
)


def available_gathers() -> list:
    """The gathers of ``GATHERS`` that the installed release has, with the (module, function) objects."""
    import importlib

    found = []
    for g in GATHERS:
        try:
            module = importlib.import_module(g.module)
        except ImportError:
            continue
        if hasattr(module, g.function) and hasattr(module, g.metadata_class):
            found.append((g, module))
    return found

# -- observation -------------------------------------------------------------------------

_state = threading.local()


def _open_group() -> Optional[str]:
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else None


class RecordingContext:
    """Stand-in for sglang's ``SymmetricMemoryContext`` on CPU (see module docstring)."""

    def __init__(self, group_coordinator: Any):
        self.group_name = getattr(group_coordinator, "unique_name", None) or repr(group_coordinator)

    def __enter__(self):
        stack = _state.__dict__.setdefault("stack", [])
        if stack:
            raise RuntimeError("beginAllocateToPool: already recording to mempool_id (nested symmetric context)")
        stack.append(self.group_name)
        return self

    def __exit__(self, *exc):
        _state.stack.pop()
        return False


@dataclass
class Allocation:
    op: str
    ptr: int
    nbytes: int
    context: Optional[str]


@dataclass
class CallRecord:
    allocations: List[Allocation] = field(default_factory=list)
    gathers: List[tuple] = field(default_factory=list)  # (output ptr, input ptr, context open at the gather)


#: Some releases (0.5.9) assert that a stream is passed; the CPU path of the gather never uses it.
NO_STREAM = SimpleNamespace(note="CPU rehearsal: no CUDA streams")


def _storage_ptr(t) -> int:
    return t.untyped_storage().data_ptr()


def make_allocation_mode(record: CallRecord):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class AllocationRecorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {
                _storage_ptr(t)
                for t in tree_flatten((args, kwargs or {}))[0]
                if isinstance(t, torch.Tensor)
            }
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() and _storage_ptr(t) not in inputs:
                    record.allocations.append(
                        Allocation(str(func), _storage_ptr(t), t.untyped_storage().nbytes(), _open_group())
                    )
            return out

    return AllocationRecorder()


# -- one process -------------------------------------------------------------------------


def install_recording_context() -> None:
    """sglang's symmetric context replaced by ``RecordingContext``, and symmetric memory reported on (no GPU here)."""
    from sglang.srt.distributed.device_communicators import pynccl_allocator as pa

    pa.SymmetricMemoryContext = RecordingContext
    pa.is_symmetric_memory_enabled = lambda: True


def install_cpu_all_gather(records: Dict[str, CallRecord]):
    """A CPU kernel for ``sglang::reg_all_gather_into_tensor`` (gloo, recording what it is handed); returns the
    op library, which must be kept alive while it is used."""
    import torch
    from sglang.srt.distributed import parallel_state as ps

    lib = torch.library.Library("sglang", "IMPL")

    def all_gather_cpu(output, input, group_name):
        current = records.get("current")
        if current is not None:
            current.gathers.append((_storage_ptr(output), _storage_ptr(input), _open_group()))
        ps._groups[group_name]()._all_gather_into_tensor(output, input)

    lib.impl("reg_all_gather_into_tensor", all_gather_cpu, "CPU")
    return lib


def _install_cpu_stand_ins(records: Dict[str, CallRecord]):
    """Replace what needs a GPU (see module docstring); returns the op library, to be kept alive."""
    install_recording_context()
    return install_cpu_all_gather(records)


def cpu_gather_group(ps, world: int, rank: int):
    """A real ``GroupCoordinator`` over gloo for the CP gathers, without pynccl (which needs CUDA).

    0.5.9+ let ``init_model_parallel_group`` turn pynccl off; 0.5.6-0.5.8 force it on there, so the
    coordinator is built directly with the same arguments and pynccl off.
    """
    import inspect

    ranks = [list(range(world))]
    if "use_pynccl" in inspect.signature(ps.init_model_parallel_group).parameters:
        return ps.init_model_parallel_group(
            ranks, rank, "gloo", use_pynccl=False, use_custom_allreduce=False, group_name="attn_cp"
        )
    wanted = dict(group_ranks=ranks, local_rank=rank, torch_distributed_backend="gloo", use_pynccl=False,
                  use_pymscclpp=False, use_custom_allreduce=False, use_torch_symm_mem_all_reduce=False,
                  use_hpu_communicator=False, use_xpu_communicator=False, use_npu_communicator=False,
                  use_message_queue_broadcaster=False, group_name="attn_cp")
    accepted = inspect.signature(ps.GroupCoordinator.__init__).parameters
    return ps.GroupCoordinator(**{k: v for k, v in wanted.items() if k in accepted})


def _split_lengths(rng: random.Random, total: int, cp: int) -> List[int]:
    """Uneven per-rank token counts summing to ``total``, each at most ceil(total / cp)."""
    max_len = (total + cp - 1) // cp
    lengths = [max_len] * cp
    excess = max_len * cp - total
    while excess:
        r = rng.randrange(cp)
        if lengths[r] > 0:
            lengths[r] -= 1
            excess -= 1
    return lengths


def _case_tensor(case_seed: int, rank: int, rows: int, shape_rest, dtype):
    import torch

    gen = torch.Generator().manual_seed(case_seed * 1009 + rank)
    return torch.randn((rows, *shape_rest), generator=gen, dtype=torch.float32).to(dtype)


def _worker(rank: int, world: int, port: int, cases: int, seed: int, patch: bool, send: bool, nccl, queue) -> None:
    try:
        import torch

        records: Dict[str, CallRecord] = {}
        from sglang.srt.distributed import parallel_state as ps

        ps.init_distributed_environment(
            world_size=world,
            rank=rank,
            distributed_init_method=f"tcp://127.0.0.1:{port}",
            local_rank=rank,
            backend="gloo",
        )
        group = cpu_gather_group(ps, world, rank)
        ps._ATTN_CP = group
        from sglang.srt.layers import dp_attention

        if hasattr(dp_attention, "_ATTN_TP_GROUP"):  # 0.5.6-0.5.8 gather NSA prefill CP on the attention-TP group
            dp_attention._ATTN_TP_GROUP = group

        gathers = available_gathers()
        originals = {g.label: getattr(m, g.function) for g, m in gathers}
        status = None
        if patch:  # before the stand-ins, so the pool fix meets sglang's real SymmetricMemoryContext
            import sglang_cp_symm
            from sglang_cp_symm.engine.settings import Settings

            status = sglang_cp_symm.patch(Settings(enabled=True, send=send), nccl=nccl)
        patched = {g.label: getattr(m, g.function) for g, m in gathers}
        keep_alive = {"cpu_all_gather_kernel": _install_cpu_stand_ins(records)}

        rng = random.Random(seed)
        results = []
        dtypes = [torch.float32, torch.bfloat16, torch.float16]
        for case in range(cases):
            total = rng.randint(2 * world, 64 * world + 7)
            lengths = _split_lengths(rng, total, world)
            gather, module = gathers[case % len(gathers)]
            rest = (rng.choice([1, 2, 4]), rng.choice([8, 24])) if gather.kv_cache else (rng.choice([1, 3, 16]),)
            dtype = dtypes[case % len(dtypes)]
            max_len = (total + world - 1) // world
            meta = getattr(module, gather.metadata_class)(max_rank_len=[max_len] * world, per_rank_actual_token=lengths)
            forward_batch = SimpleNamespace(**{gather.metadata_attr: meta})
            local = _case_tensor(seed + case, rank, lengths[rank], rest, dtype)
            expected = torch.cat([_case_tensor(seed + case, r, lengths[r], rest, dtype) for r in range(world)])

            outcome = {"case": case, "function": gather.label, "total": total, "lengths": lengths, "dtype": str(dtype)}
            for label, fn in (("unpatched", originals[gather.label]), ("patched", patched[gather.label])):
                record = CallRecord()
                records["current"] = record
                with make_allocation_mode(record):
                    out = fn(local, total, world, forward_batch, NO_STREAM)
                records["current"] = None
                gather_out, gather_in = record.gathers[0][:2] if len(record.gathers) == 1 else (None, None)
                inside = [a for a in record.allocations if a.context is not None]
                outcome[label] = {
                    "equal_expected": bool(torch.equal(out, expected)),
                    "gathers": len(record.gathers),
                    "inside": [(a.op, a.nbytes, a.context, a.ptr == gather_out, a.ptr == gather_in) for a in inside],
                    "outside": [(a.op, a.nbytes) for a in record.allocations if a.context is None],
                    "output_in_context": gather_out is not None and any(a.ptr == gather_out for a in inside),
                    "input_in_context": gather_in is not None and any(a.ptr == gather_in for a in inside),
                    "result": out,
                }
            outcome["bit_identical"] = bool(torch.equal(outcome["patched"].pop("result"), outcome["unpatched"].pop("result")))
            results.append(outcome)
        queue.put((rank, {"status": status, "results": results}))
        keep_alive.clear()
        torch.distributed.barrier()
    except BaseException:
        queue.put((rank, {"error": traceback.format_exc()}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cp_size: int = 2, cases: int = 20, seed: int = 1234, patch: bool = True, send: bool = False,
        nccl: Optional[str] = None, timeout: float = 300) -> Dict[int, dict]:
    """Spawn ``cp_size`` processes, run ``cases`` random gathers in each, and return each rank's report.

    ``send`` asks for send-buffer staging; ``nccl`` decides the NCCL policy as if that version
    were loaded (there is no NCCL on a CPU machine), e.g. "2.27.7" where staging is engaged.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, cp_size, port, cases, seed, patch, send, nccl, queue), daemon=True)
        for r in range(cp_size)
    ]
    for p in procs:
        p.start()
    reports: Dict[int, dict] = {}
    try:
        for _ in procs:
            rank, report = queue.get(timeout=timeout)
            reports[rank] = report
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return reports


def run_demo(cp_size: int = 2, cases: int = 20, send: bool = False, nccl: Optional[str] = None) -> int:
    """``sglang-cp-symm demo``: the same gathers with the plugin off and on, and what changed."""
    from ..releases import installed_sglang

    mode = f", send staging requested, policy as for NCCL {nccl or 'unknown'}" if send else ""
    print(f"sglang {installed_sglang()}: {cases} random all-gathers on {cp_size} CPU processes (gloo), "
          f"the release's own functions{mode}")
    reports = run(cp_size=cp_size, cases=cases, patch=True, send=send, nccl=nccl)
    errors = [r["error"] for r in reports.values() if "error" in r]
    if errors:
        print(errors[0])
        return 1
    rank0 = reports[0]
    print("plugin status:", {k: v["state"] for k, v in rank0["status"]["targets"].items()})
    ok = True
    for fn in sorted({c["function"] for c in rank0["results"]}):
        rows = [c for rep in reports.values() for c in rep["results"] if c["function"] == fn]
        for label in ("unpatched", "patched"):
            n_out = sum(c[label]["output_in_context"] for c in rows)
            n_in = sum(c[label]["input_in_context"] for c in rows)
            n_other = sum(sum(1 for i in c[label]["inside"] if not (i[3] or i[4])) for c in rows)
            print(f"  {fn:<48} {label:<9}: in the CP symmetric context: output {n_out}/{len(rows)}, "
                  f"send buffer {n_in}/{len(rows)}, anything else {n_other}")
        same = all(c["bit_identical"] and c["patched"]["equal_expected"] for c in rows)
        ok &= same
        print(f"  {fn:<48} results bit-identical to unpatched and correct: {same}")
        example = rows[0]["patched"]
        print(f"    e.g. case {rows[0]['case']} lengths {rows[0]['lengths']}: inside={example['inside']} outside={example['outside']}")
    return 0 if ok else 1
