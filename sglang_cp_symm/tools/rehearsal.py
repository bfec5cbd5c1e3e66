"""Run the real CP all-gathers of the installed sglang across processes on CPU, and watch the allocations.

This is the plugin's dress rehearsal for machines without a GPU: the engine of the
CPU proof (``tests/tools/test_cp_gather_proof.py``) and of ``sglang-cp-symm demo``.
It uses sglang's own code: ``init_distributed_environment`` with gloo, real
``GroupCoordinator`` objects for the attention-CP group installed where the
release's targets look it up, and the unmodified (or patched) functions of the
register on real tensors, called as the installed release's signatures say
(``gather_calls``).

One start per release: the parent imports the release's modules once (so a module
that fails to import is reported with its error before anything runs), then forks
the ranks, which build one gloo group per CP size (2, 3, 4 by default, out of one
world) and run every configuration of the plugin on the same calls: off, on with
the NCCL the release pins, on with send staging, and with policies that engage it.

Two things cannot exist without a GPU, and are replaced, only they:
- sglang's ``SymmetricMemoryContext`` needs a CUDA ``MemPool`` and an NCCL
  communicator. A recording context stands in: it records which group's
  context is open (and, like torch, refuses to nest on one pool), per ``Recorder``.
- the custom op ``sglang::reg_all_gather_into_tensor`` has a CUDA kernel only;
  a CPU kernel calls the group's own ``_all_gather_into_tensor`` (gloo) and
  records the output and input tensors it was handed.
zigzag opens its context only for CUDA tensors; a tensor subclass that reports
``is_cuda`` shows what a GPU gets (``gather_calls.cuda_looking_class``), and the
plain CPU tensor is run too.

A ``TorchDispatchMode`` records every tensor a call allocates (any op output that
does not alias an input) and whether a symmetric context was open at that moment,
so a case can prove that the very buffer handed to the all-gather as output (and,
with send staging, as input), and nothing else, was allocated inside the
attention-CP group's context. A line tracer records which lines of each target
function ran, so the proof can show that every branch of every function ran, in
its original and in its patched form.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import socket
import sys
import textwrap
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .gather_calls import calls_for, locate, round_robin_switches, switched

# -- observation -------------------------------------------------------------------------


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


def _storage_ptr(t) -> int:
    return t.untyped_storage().data_ptr()


def _recording_context(opened: threading.local) -> type:
    """A stand-in for sglang's ``SymmetricMemoryContext`` on CPU (see the module docstring) that keeps the group
    of the context open in each thread on ``opened``."""

    class RecordingContext:
        def __init__(self, group_coordinator: Any, *args: Any, **kwargs: Any):
            self.group_coordinator = group_coordinator  # as sglang's class keeps it (the race guard reads its name)
            self.group_name = getattr(group_coordinator, "unique_name", None) or repr(group_coordinator)

        def __enter__(self):
            stack = opened.__dict__.setdefault("stack", [])
            if stack:
                raise RuntimeError("beginAllocateToPool: already recording to mempool_id (nested symmetric context)")
            stack.append(self.group_name)
            return self

        def __exit__(self, *exc):
            opened.stack.pop()
            return False

    return RecordingContext


class Recorder:
    """What one rehearsal process observes: which group's symmetric context is open in each thread, and the call
    being recorded (``current``: its allocations and the gathers it made).

    ``install_context`` and ``install_all_gather`` put the two stand-ins in (see the module docstring);
    ``allocations(record)`` records every tensor allocated under it."""

    def __init__(self) -> None:
        self._opened = threading.local()
        self.context_class = _recording_context(self._opened)
        self.current: Optional[CallRecord] = None

    def open_group(self) -> Optional[str]:
        stack = getattr(self._opened, "stack", None)
        return stack[-1] if stack else None

    def allocations(self, record: CallRecord):
        """A dispatch mode that adds every tensor allocated under it to ``record``, with the context then open."""
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        open_group = self.open_group

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
                            Allocation(str(func), _storage_ptr(t), t.untyped_storage().nbytes(), open_group())
                        )
                return out

        return AllocationRecorder()

    def install_context(self) -> None:
        """sglang's symmetric context replaced by the recording one, and symmetric memory reported on (no GPU here).
        Where the race guard is engaged, its hooks go on the stand-in as they went on sglang's class."""
        from sglang.srt.distributed.device_communicators import pynccl_allocator as pa

        from ..engine.activation import current

        pa.SymmetricMemoryContext = self.context_class
        pa.is_symmetric_memory_enabled = lambda: True
        applied = current()
        if applied is not None:
            applied.race_guard.hook_class(self.context_class)

    def install_all_gather(self):
        """A CPU kernel for ``sglang::reg_all_gather_into_tensor`` (gloo, adding what it is handed to ``current``);
        returns the op library, which must be kept alive while it is used."""
        import torch
        from sglang.srt.distributed import parallel_state as ps

        lib = torch.library.Library("sglang", "IMPL")

        def all_gather_cpu(output, input, group_name):
            if self.current is not None:
                self.current.gathers.append((_storage_ptr(output), _storage_ptr(input), self.open_group()))
            ps._groups[group_name]()._all_gather_into_tensor(output, input)

        lib.impl("reg_all_gather_into_tensor", all_gather_cpu, "CPU")
        return lib


# -- the stand-ins -----------------------------------------------------------------------


def cpu_gather_group(ps, world: int, rank: int, group_ranks: Optional[List[List[int]]] = None,
                     name: str = "attn_cp"):
    """A real ``GroupCoordinator`` over gloo for the CP gathers (``name``: its ``group_name``), without pynccl.

    ``group_ranks`` (default: every rank in one group) as ``init_model_parallel_group``
    takes it; every rank must build every group, in the same order. 0.5.9+ let
    ``init_model_parallel_group`` turn pynccl off; 0.5.6-0.5.8 force it on there, so the
    coordinator is built directly with the same arguments and pynccl off.
    """
    ranks = group_ranks or [list(range(world))]
    if "use_pynccl" in inspect.signature(ps.init_model_parallel_group).parameters:
        return ps.init_model_parallel_group(
            ranks, rank, "gloo", use_pynccl=False, use_custom_allreduce=False, group_name=name
        )
    wanted = dict(group_ranks=ranks, local_rank=rank, torch_distributed_backend="gloo", use_pynccl=False,
                  use_pymscclpp=False, use_custom_allreduce=False, use_torch_symm_mem_all_reduce=False,
                  use_hpu_communicator=False, use_xpu_communicator=False, use_npu_communicator=False,
                  use_message_queue_broadcaster=False, group_name=name)
    accepted = inspect.signature(ps.GroupCoordinator.__init__).parameters
    return ps.GroupCoordinator(**{k: v for k, v in wanted.items() if k in accepted})


def install_cp_group(coordinator: Any, rank: int, size: int) -> List[str]:
    """Put ``coordinator`` where this release's targets look the CP group up; returns where it went.

    0.5.6-0.5.8 gather on ``dp_attention._ATTN_TP_GROUP``; 0.5.9+ read ``parallel_state._ATTN_CP``
    (0.5.14-0.5.20 through ``get_parallel()``, read-through); 0.5.21+ ``get_parallel()`` answers
    stamped values only (``override_permanently``; cp-sites.md §B2).
    """
    from sglang.srt.distributed import parallel_state as ps
    from sglang.srt.layers import dp_attention

    where = []
    if hasattr(ps, "_ATTN_CP"):
        ps._ATTN_CP = coordinator
        where.append("parallel_state._ATTN_CP")
    if hasattr(dp_attention, "_ATTN_TP_GROUP"):  # 0.5.6-0.5.8 gather NSA prefill CP on the attention-TP group
        dp_attention._ATTN_TP_GROUP = coordinator
        where.append("dp_attention._ATTN_TP_GROUP")
    if importlib.util.find_spec("sglang.srt.runtime_context") is not None:
        parallel = importlib.import_module("sglang.srt.runtime_context").get_parallel()
        if hasattr(parallel, "override_permanently"):
            if hasattr(parallel, "clear_stamp"):
                parallel.clear_stamp()
            parallel.override_permanently(attn_cp_group=coordinator, attn_cp_rank=rank, attn_cp_size=size)
            where.append("get_parallel() stamp")
    return where


# -- the release's modules ----------------------------------------------------------------

#: What the rehearsal itself needs beyond the register's modules.
HARNESS_MODULES = ("sglang.srt.distributed.parallel_state", "sglang.srt.layers.dp_attention",
                   "sglang.srt.distributed.device_communicators.pynccl_allocator")


def import_modules(names) -> Dict[str, str]:
    """{module: "imported" | "not present" | "failed to import: <error>"} (a failure is never confused with absence).
    ``SystemExit`` goes on: strict mode stops the engine's import, and this command with it."""
    outcome = {}
    for name in names:
        try:
            present = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError) as exc:  # a parent package failed to import
            outcome[name] = f"failed to import: {type(exc).__name__}: {str(exc)[:300]}"
            continue
        if not present:
            outcome[name] = "not present"
            continue
        try:
            importlib.import_module(name)
            outcome[name] = "imported"
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure of a release's import is the finding
            outcome[name] = f"failed to import: {type(exc).__name__}: {str(exc)[:300]}"
    return outcome


def release_targets():
    """(release, the register's targets present in it, the modules to import)."""
    from ..releases import installed_sglang
    from ..targets import targets_for

    release = installed_sglang()
    if release is None:
        return None, (), HARNESS_MODULES
    targets = targets_for(release)
    return release, targets, tuple(HARNESS_MODULES) + tuple(sorted({t.module for t in targets}))


# -- configurations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One way the plugin is set for a run of every call: ``off`` is sglang's own functions."""

    name: str
    label: str
    enabled: bool = False
    send: bool = False
    allow_nccl_race: bool = False
    nccl: Optional[str] = None


#: An NCCL line where send staging engages the symmetric kernel and carries no race (nccl_policy).
STAGING_NCCL = "2.27.7"


def pinned_nccl(release) -> Optional[str]:
    from ..pins import pin_for

    pin = pin_for(release)
    return None if pin is None else pin.nccl


def default_configs(release, nccl: Optional[str] = None, send: bool = True, every: bool = True) -> List[Config]:
    """off; on (as NCCL ``nccl``, default the release's pin); on with send staging; and, with ``every``,
    send staging where it engages (NCCL 2.27.7) and the race opt-in where the pinned NCCL is racy."""
    from ..engine.nccl_policy import NcclVersion, line_for

    chosen = nccl or pinned_nccl(release)
    where = f"NCCL {chosen}" + (" (the release's pin)" if nccl is None else " (given)")
    configs = [Config("off", "plugin off (sglang's own functions)"),
               Config("on", f"plugin on, {where}", enabled=True, nccl=chosen)]
    if send:
        configs.append(Config("on+send", f"plugin on, SEND=1, {where}", enabled=True, send=True, nccl=chosen))
    if every and chosen != STAGING_NCCL:
        configs.append(Config("on+send@2.27.7", f"plugin on, SEND=1, policy as for NCCL {STAGING_NCCL} "
                                                 "(where staging engages)", enabled=True, send=True,
                              nccl=STAGING_NCCL))
    if every and chosen is not None and line_for(NcclVersion.parse(chosen)).race:
        configs.append(Config("on+send+race", f"plugin on, SEND=1, ALLOW_NCCL_RACE=1, {where}", enabled=True,
                              send=True, allow_nccl_race=True, nccl=chosen))
    return configs


# -- tracing which lines ran -----------------------------------------------------------------


class LineTracer:
    """Records the lines run in the given code objects (a ``sys.settrace`` hook, only around a call)."""

    def __init__(self, codes: Dict[Any, str]):
        self.codes = codes
        self.lines: Dict[str, set] = {label: set() for label in codes.values()}

    def _global(self, frame, event, arg):
        label = self.codes.get(frame.f_code)
        if label is None:
            return None
        seen = self.lines[label]

        def local(frame, event, arg):
            if event == "line":
                seen.add(frame.f_lineno)
            return local

        return local

    def __enter__(self):
        self._previous = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc):
        sys.settrace(self._previous)
        return False


def function_lines(fn) -> Dict[str, Any]:
    """The lines of ``fn`` that carry code, and which of them only raise (input validation).

    For a function the plugin rewrote, the source is the rewritten text it was compiled
    from (``__sglang_cp_symm_source__``), numbered from the function's first line.
    """
    import ast

    source = getattr(fn, "__sglang_cp_symm_source__", None) or textwrap.dedent(inspect.getsource(fn))
    first = fn.__code__.co_firstlineno
    node = ast.parse(source).body[0]
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring carries no code
    body_start = body[0].lineno
    raising = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Raise):
            raising.update(range(sub.lineno, sub.end_lineno + 1))
    shift = first - node.lineno
    code_lines = {line for _, _, line in fn.__code__.co_lines() if line is not None}
    lines = {line for line in code_lines if line - shift >= body_start}
    text = source.splitlines()
    return {"lines": sorted(lines), "raising": sorted(line for line in lines if line - shift in raising),
            "text": {line: text[line - shift - 1].strip() for line in lines if 0 < line - shift <= len(text)}}


# -- one rank ---------------------------------------------------------------------------------


def _settings_for(config: Config):
    from ..engine.settings import Settings

    return Settings(enabled=True, send=config.send, allow_nccl_race=config.allow_nccl_race,
                    warmup=False, watchdog=False)


def _observe(record: CallRecord, result, expected, off_result) -> dict:
    import torch

    gather_out, gather_in = record.gathers[0][:2] if len(record.gathers) == 1 else (None, None)
    inside = [a for a in record.allocations if a.context is not None]
    return {
        "correct": bool(result.shape == expected.shape and torch.equal(result, expected)),
        "same_as_off": None if off_result is None else bool(
            result.shape == off_result.shape and torch.equal(result, off_result)),
        "gathers": len(record.gathers),
        "inside": [{"op": a.op, "bytes": a.nbytes, "group": a.context, "is_output": a.ptr == gather_out,
                    "is_input": a.ptr == gather_in} for a in inside],
        "outside": len(record.allocations) - len(inside),
        "output_in_context": gather_out is not None and any(a.ptr == gather_out for a in inside),
        "input_in_context": gather_in is not None and any(a.ptr == gather_in for a in inside),
        "output_bytes": next((a.nbytes for a in record.allocations if a.ptr == gather_out), None),
        "input_bytes": next((a.nbytes for a in record.allocations if a.ptr == gather_in), None),
    }


def _run_call(call: Any, fn: Any, recorder: Recorder, homes: Dict[str, list], tracer: LineTracer) -> tuple:
    """(its record, its result, None) for one call of ``fn`` as ``call`` says, or (record, None, the error with the
    last frames of its traceback)."""
    record = CallRecord()
    recorder.current = record
    try:
        with switched(homes, call.switches), tracer, recorder.allocations(record):
            return record, call.invoke(fn), None
    except Exception as exc:  # noqa: BLE001 - reported per call, with its traceback
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-600:]
        return record, None, error + "\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])[-1500:]
    finally:
        recorder.current = None


def _call_entry(call: Any) -> dict:
    """What the report keeps of one call, before its runs in each configuration."""
    return {"key": call.key, "target": call.target, "branch": call.branch, "cp": call.cp, "lengths": call.lengths,
            "dtype": call.dtype, "expected_gathers": call.gathers, "expected_rows": int(call.expected.shape[0]),
            "plain_cpu": call.plain_cpu, "runs": {}}


def _worker(rank: int, world: int, port: int, sizes: List[int], configs: List[Config], seed: int, rounds: int,
            queue, extra: Optional[Callable] = None) -> None:
    started = time.monotonic()
    try:
        import torch

        torch.set_num_threads(1)
        # 0.5.6-0.5.8 warn on every async gather that pynccl is absent (the CPU path, parallel_state.py 0.5.6:767)
        logging.getLogger("sglang.srt.distributed.parallel_state").addFilter(
            lambda record: "not all_gather_into_tensor_async" not in record.getMessage())
        from sglang.srt.distributed import parallel_state as ps
        from sglang.srt.distributed.device_communicators import pynccl_allocator as pa

        import sglang_cp_symm
        from sglang_cp_symm.engine import activation
        from sglang_cp_symm.engine.logs import logger as plugin_logger

        if rank != 0:  # every rank applies the same plugin and would print the same lines: rank 0 speaks for them
            plugin_logger.setLevel(logging.ERROR)

        release, targets, modules = release_targets()
        ps.init_distributed_environment(world_size=world, rank=rank, distributed_init_method=f"tcp://127.0.0.1:{port}",
                                        local_rank=rank, backend="gloo")
        groups = {}
        for size in sizes:  # one group per CP size, built by every rank in the same order
            ranks = [list(range(size))] + ([list(range(size, world))] if size < world else [])
            groups[size] = cpu_gather_group(ps, world, rank, ranks)
        run_extra = extra(ps, world, rank) if extra is not None else None  # after the groups: in the same order
        recorder = Recorder()
        keep_alive = recorder.install_all_gather()
        real_context = pa.SymmetricMemoryContext
        by_name = {t.name: t for t in targets}
        located = {t.name: locate(t, importlib.import_module(t.module)) for t in targets}
        functions = [located[t.name] for t in targets]
        # the calls, built once from the release's own (unpatched) functions: the same in every configuration
        calls = {size: calls_for(functions, by_name, rank, size, seed, rounds) for size in sizes if rank < size}
        homes: Dict[str, list] = {}  # where each round-robin switch is read from (gather_calls.round_robin_switches)
        for tf in functions:
            if tf.attribute == "cp_all_gather_rerange_output":
                homes.update(round_robin_switches(tf.current(), tf.module))
        report: Dict[str, Any] = {"rank": rank, "release": str(release), "status": {}, "calls": {}, "lines": {},
                                  "functions": {}, "groups": {}, "seconds": {"setup": round(time.monotonic() - started, 2)}}
        off_results: Dict[str, Any] = {}
        for config in configs:
            config_started = time.monotonic()
            pa.SymmetricMemoryContext = real_context  # the pool fix must meet sglang's real class
            status = None
            if config.enabled:
                status = sglang_cp_symm.patch(_settings_for(config), nccl=config.nccl)
            report["status"][config.name] = status
            recorder.install_context()
            current = {name: tf.current() for name, tf in located.items()}
            codes = {fn.__code__: name for name, fn in current.items() if hasattr(fn, "__code__")}
            report["functions"][config.name] = {
                name: {"rewritten": bool(getattr(fn, "__sglang_cp_symm_source__", None)),
                       **function_lines(fn)} for name, fn in current.items()}
            tracer = LineTracer(codes)
            for size, size_calls in calls.items():
                report["groups"][str(size)] = groups[size].unique_name
                install_cp_group(groups[size], rank, size)
                for call in size_calls:
                    record, result, error = _run_call(call, current[call.target], recorder, homes, tracer)
                    entry = report["calls"].setdefault(call.key, _call_entry(call))
                    if error is not None:
                        entry["runs"][config.name] = {"error": error}
                        continue
                    if config.name == "off":
                        off_results[call.key] = result
                    entry["runs"][config.name] = _observe(record, result, call.expected, off_results.get(call.key))
                torch.distributed.barrier(group=groups[size].cpu_group)
            if run_extra is not None:
                report.setdefault("extra", {})[config.name] = run_extra(rank, recorder)
            report["lines"][config.name] = {name: sorted(lines) for name, lines in tracer.lines.items()}
            if config.enabled:
                sglang_cp_symm.unpatch()
            assert activation.current() is None or not activation.current().active
            report["seconds"][config.name] = round(time.monotonic() - config_started, 2)
        queue.put((rank, report))
        keep_alive = None  # noqa: F841
        torch.distributed.barrier()
    except BaseException:  # noqa: BLE001 - the parent reports it
        queue.put((rank, {"error": traceback.format_exc()[-6000:]}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prove(world: int = 4, sizes=(2, 3, 4), configs: Optional[List[Config]] = None, seed: int = 1234,
          rounds: int = 1, timeout: float = 600,
          extra: Optional[Callable] = None) -> dict:
    """Run every call of every target of the installed release in every configuration, across ``world`` processes.

    ``extra(ps, world, rank)``, called by each rank after its CP groups are built, returns a function that each
    configuration runs once more (``(rank, recorder) -> dict``, reported under "extra"): tests rehearse other
    gathers there (``maint/rehearsal_cases.dcp_case``). The ranks are forked, so it need not be picklable.

    Returns {"release", "imports": {module: outcome}, "configs": [...], "ranks": {rank: report}} or, when a
    module of the release does not import, the same with "error" naming it and nothing run.
    """
    import multiprocessing as mp

    release, targets, modules = release_targets()
    sizes = sorted({s for s in sizes if 2 <= s <= world})
    imports = import_modules(modules)
    result: Dict[str, Any] = {"release": None if release is None else str(release), "imports": imports,
                              "targets": [t.name for t in targets], "sizes": sizes, "world": world}
    if release is None:
        result["error"] = "sglang is not installed in this environment"
        return result
    failed = {m: o for m, o in imports.items() if o != "imported"}
    if failed:
        result["error"] = "; ".join(f"{m} {o}" for m, o in failed.items())
        return result
    configs = configs if configs is not None else default_configs(release)
    result["configs"] = [asdict(c) for c in configs]
    ctx = mp.get_context("fork")  # the parent has imported the release already: no rank pays the imports again
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, sizes, configs, seed, rounds, queue, extra),
                         daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    reports: Dict[int, dict] = {}
    try:
        for _ in procs:
            rank, report = queue.get(timeout=timeout)
            reports[rank] = report
    except Exception as exc:  # noqa: BLE001 - a rank that never answered
        result["error"] = f"{len(reports)} of {world} ranks answered within {timeout:.0f} s ({type(exc).__name__})"
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    result["ranks"] = {str(r): reports[r] for r in sorted(reports)}
    errors = [f"rank {r}: {rep['error']}" for r, rep in sorted(reports.items()) if "error" in rep]
    if errors:
        result["error"] = "\n".join(errors)
    return result


# -- what a maintainer reads from it -------------------------------------------------------------


def coverage(result: dict) -> Dict[str, Dict[str, dict]]:
    """{config: {target: {"missing": [(line, text)], "raising_only": n}}}: lines that ran on no rank in no call."""
    out: Dict[str, Dict[str, dict]] = {}
    ranks = [r for r in result.get("ranks", {}).values() if "error" not in r]
    if not ranks:
        return out
    for config in ranks[0]["lines"]:
        out[config] = {}
        for target, info in ranks[0]["functions"][config].items():
            ran = set()
            for rep in ranks:
                ran |= set(rep["lines"][config].get(target, []))
            lines = set(info["lines"])
            raising = set(info["raising"])
            missing = sorted(lines - ran - raising)
            out[config][target] = {
                "missing": [(line, info["text"].get(str(line), info["text"].get(line, ""))) for line in missing],
                "not_run_raise_only": len((lines - ran) & raising),
                "rewritten": info["rewritten"],
            }
    return out


def merged_calls(result: dict) -> List[dict]:
    """Every call with each rank's observation: [{key, target, branch, cp, lengths, dtype, ranks: {rank: runs}}]."""
    merged: Dict[str, dict] = {}
    for rank, rep in result.get("ranks", {}).items():
        for key, entry in rep.get("calls", {}).items():
            row = merged.setdefault(key, {k: v for k, v in entry.items() if k != "runs"})
            row.setdefault("ranks", {})[rank] = entry["runs"]
    return sorted(merged.values(), key=lambda row: (row["target"], row["cp"], row["key"]))
