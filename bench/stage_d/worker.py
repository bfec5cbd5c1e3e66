"""One rank of stage D: every mode, the correctness sweep, latency, kernels, pools; one JSON file per rank.

Started by ``torchrun --nproc-per-node N -m bench.stage_d worker ...`` (or, for the CPU dry run, by the
forking launcher in ``cli``); reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` as torchrun sets them. Writes ``<out>/rank<R>.json`` and ``<out>/rank<R>.progress``
(``deadline``); the table is made from those files afterwards (``table``), so a hung or failed rank still
leaves its part.
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
import traceback
from typing import Any, Dict, List

from . import deadline as deadlines
from . import modes as mode_defs
from . import nccl_log, observe, releases, sweep

#: NVLink multicast stays off in every process and child (KINDS.md: a program using it can put the
#: host's GPUs out of service); the scripts set these too, this keeps a bare torchrun safe.
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def env_rank() -> tuple:
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    return rank, world, local


def mapped_libraries(name: str) -> List[str]:
    """The files named ``name*`` this process has mapped (Linux ``/proc/self/maps``)."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                if os.path.basename(path).startswith(name) and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


class Rank:
    """The state of one rank across the run."""

    def __init__(self, args):
        for key, value in MULTICAST_OFF.items():
            os.environ[key] = value
        self.args = args
        self.rank, self.world, self.local = env_rank()
        os.makedirs(args.out, exist_ok=True)
        self.progress = deadlines.Progress(os.path.join(args.out, f"rank{self.rank}.progress"), args.deadline)
        self.result: Dict[str, Any] = {"rank": self.rank, "world": self.world, "host": platform.node(),
                                       "pid": os.getpid(), "cp": {}, "errors": []}
        self.log = nccl_log.LogCursor(nccl_log.log_file_of_this_process())

    # -- set-up ----------------------------------------------------------------------------
    def setup(self) -> None:
        import torch

        self.torch = torch
        self.gpu = not self.args.cpu and torch.cuda.is_available()
        if not self.gpu:
            torch.set_num_threads(1)
        count = torch.cuda.device_count() if self.gpu else 0
        self.device_index = self.local % count if count else 0
        self.device = torch.device(f"cuda:{self.device_index}") if self.gpu else torch.device("cpu")
        if self.gpu:
            torch.cuda.set_device(self.device_index)
        from sglang.srt.distributed import parallel_state as ps
        from sglang_cp_symm.releases import installed_build

        build = installed_build()
        self.ps = ps
        self.release = None if build is None else build.release
        self.result.update(sglang=None if build is None else build.shown, torch=torch.__version__,
                           device=(f"cuda:{self.device_index} {torch.cuda.get_device_name(self.device_index)}"
                                   if self.gpu else "cpu (gloo)"), gpus_visible=count,
                           check_mode=os.environ.get("NCCL_CHECK_MODE") or "default",
                           multicast=dict((k, os.environ.get(k)) for k in MULTICAST_OFF))
        backend = "nccl" if self.gpu else "gloo"
        if self.gpu:
            from . import gpu

            gpu.enable_symmetric_memory()
        with self.progress.step(step="init", backend=backend):
            ps.init_distributed_environment(world_size=self.world, rank=self.rank, distributed_init_method="env://",
                                            local_rank=self.device_index, backend=backend)
            self.world_cpu = ps.get_world_group().cpu_group
            self.build_groups(backend)
        if self.gpu:
            from . import gpu

            with self.progress.step(step="preallocate", gib=self.args.prealloc_gb):
                gpu.preallocate(self.tp, self.args.prealloc_gb)
        if not self.gpu and self.args.sizes == list(sweep.LATENCY_MIB):
            # gloo on CPU measures nothing: one small size, a few calls, only to run the code path
            self.args.sizes, self.args.iters, self.args.warmup = [0.0625], min(self.args.iters, 5), 1
        self.result["args"] = {"sizes": self.args.sizes, "iters": self.args.iters, "warmup": self.args.warmup,
                               "profile_calls": self.args.profile_calls if self.gpu else 0, "quick": self.args.quick,
                               "modes": [m.name for m in self.args.modes], "deadline_s": self.args.deadline}
        self.read_nccl()
        self.cases = releases.gather_cases()
        self.result["cuda_only_context"] = [c.label for c in self.cases if c.cuda_only_context]
        self.result["cases"] = [c.label for c in self.cases]
        if self.gpu:
            self.observer = None
        else:
            self.observer = observe.CpuObserver()
            self.observer.install()

    def build_groups(self, backend: str) -> None:
        ps, gpu_on = self.ps, self.gpu
        one_rank = gpu_on and self.world == 1
        self.tp = releases.make_group(ps, [list(range(self.world))], self.device_index, backend, "tp", gpu_on)
        self.cp_groups = {}
        for cp in self.args.cp_sizes or [self.world]:
            if self.world % cp:
                raise SystemExit(f"stage D: CP size {cp} does not divide the {self.world} ranks")
            if cp == self.world and not one_rank:
                self.cp_groups[cp] = self.tp  # sglang: attn_cp_size == tp_size makes _ATTN_CP the TP group itself
            else:
                self.cp_groups[cp] = releases.make_group(ps, releases.cp_group_ranks(self.world, cp),
                                                         self.device_index, backend, "attn_cp", gpu_on)
        if one_rank:
            from . import gpu

            groups = {id(self.tp): self.tp, **{id(g): g for g in self.cp_groups.values()}}
            for g in groups.values():
                gpu.one_rank_communicator(g)
            self.result["one_rank_gate_bindings"] = gpu.lift_one_rank_gate()

    def read_nccl(self) -> None:
        info: Dict[str, Any] = {"so_path": os.environ.get("SGLANG_NCCL_SO_PATH") or None,
                                "ld_preload": os.environ.get("LD_PRELOAD") or None}
        pin = None
        try:
            from sglang_cp_symm.pins import pin_for

            pin = pin_for(self.release)
        except Exception:
            pass
        info["mapped"] = mapped_libraries("libnccl")  # two different files here: two NCCLs in one process
        if self.gpu:
            from sglang_cp_symm.engine.nccl_library import engine_nccl

            version, where = engine_nccl()
            info.update(engine=None if version is None else str(version), read_from=where,
                        torch=".".join(map(str, self.torch.cuda.nccl.version())))
            self.nccl, self.nccl_given = info["engine"], False
        else:
            given = self.args.as_nccl or (pin.nccl if pin else None)
            info.update(engine=None, read_from="no NCCL on CPU: the policy judges this version", given=given)
            self.nccl, self.nccl_given = given, True
        info["pinned"] = pin.nccl if pin else None
        info["racy"] = mode_defs.is_racy(self.nccl)
        self.result["nccl"] = info

    # -- one mode ----------------------------------------------------------------------------
    def run(self) -> None:
        for cp, group in self.cp_groups.items():
            entry = self.result["cp"].setdefault(str(cp), {"modes": {}})
            with self.progress.step(step="install", cp=cp):
                entry["install"] = releases.install_cp_group(self.ps, self.tp, group, cp)
            entry.update(rank_in_group=group.rank_in_group, group_ranks=list(group.ranks), cp_is_tp=group is self.tp,
                         groups=releases.cp_group_ranks(self.world, cp) if group is not self.tp else [group.ranks],
                         log_rank0=group.rank_in_group == 0)
            for mode in self.args.modes:
                started = time.time()
                try:
                    entry["modes"][mode.name] = self.run_mode(mode, cp, group)
                except Exception as exc:
                    entry["modes"][mode.name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                    self.result["errors"].append(traceback.format_exc()[-2000:])
                entry["modes"][mode.name]["seconds"] = round(time.time() - started, 2)
                self.save()

    def run_mode(self, mode, cp: int, group) -> Dict[str, Any]:
        if self.observer is not None:
            self.observer.before_patch()
        with self.progress.step(step="apply", cp=cp, mode=mode.name):
            applied = mode_defs.apply(mode, self.release, self.nccl, self.nccl_given)
        if self.observer is not None:
            self.observer.after_patch()
        try:
            mode_defs.refresh_status(applied)
            out: Dict[str, Any] = {"switches": mode.switches(), "judged": applied.judged, "note": applied.note,
                                   "status": mode_defs.summarize_status(applied.status)}
            out["sweep"] = self.sweep(mode, cp, group)
            out["latency"] = self.latency(mode, cp, group) if self.args.sizes else []
            # what this rank handed to the collective: the test of the log parser compares NCCL's count with it
            per_size = self.args.warmup + self.args.iters + (self.args.profile_calls if self.gpu else 0)
            out["allgathers_issued"] = out["sweep"]["gathers"] + per_size * len(out["latency"])
            out["segments"] = observe.segments() if self.gpu else {}
            mode_defs.refresh_status(applied)
            out["status"] = mode_defs.summarize_status(applied.status)
            return out
        finally:
            applied.undo()

    # -- correctness ---------------------------------------------------------------------------
    def inputs(self, case, payload, lengths, total, cp, seed):
        """This rank's input and the result every rank must see."""
        torch, r = self.torch, self.group_rank
        if case.order == "token":
            full = sweep.make_rows(torch, seed, total, payload, self.device)
            return full[r::cp].contiguous(), full
        local = sweep.make_rows(torch, seed + r, lengths[r], payload, self.device)
        expected = torch.cat([sweep.make_rows(torch, seed + q, lengths[q], payload, self.device) for q in range(cp)])
        return local, expected

    def sweep(self, mode, cp: int, group) -> Dict[str, Any]:
        torch = self.torch
        self.group_rank = group.rank_in_group
        stream = torch.cuda.current_stream() if self.gpu else None
        observer = self.observer if self.observer is not None else observe.GpuObserver(group)
        if self.gpu:
            observer.install()
        tally: Dict[str, Any] = {"cases": 0, "identical": 0, "failures": [], "output": {}, "input": {},
                                 "other_inside": 0, "by_case": {}, "gathers": 0}
        try:
            for ci, case in enumerate(self.cases):
                rng = random.Random(cp * 7919 + ci)
                per_case = tally["by_case"].setdefault(case.label, {"cases": 0, "identical": 0, "output": {},
                                                                    "input": {}})
                for kind in case.kinds:
                    for pi, payload in enumerate(sweep.payloads(kind, quick=self.args.quick)):
                        for ti, total in enumerate(sweep.totals(cp, long=self.gpu and self.args.long,
                                                                quick=self.args.quick)):
                            if case.split == "equal":
                                rows = max(1, total // cp)
                                lengths, total = [rows] * cp, rows * cp
                            elif case.split == "interleave":
                                lengths = sweep.interleave_split(total, cp)
                            else:
                                lengths = sweep.uneven_split(rng, total, cp)
                            seed = sweep.case_seed(cp, total, ci * 100 + pi * 10 + ti, 0) * 64
                            local, expected = self.inputs(case, payload, lengths, total, cp, seed)
                            with self.progress.step(step="gather", cp=cp, mode=mode.name, case=case.label,
                                                    payload=payload.label, total=total):
                                out, seen = observer.call(case.call, local, lengths, total, cp, stream)
                                if self.gpu:
                                    torch.cuda.synchronize()
                            same = out.shape == expected.shape and bool(torch.equal(out, expected))
                            tally["cases"] += 1
                            tally["gathers"] += seen["gathers"]
                            tally["identical"] += same
                            per_case["cases"] += 1
                            per_case["identical"] += same
                            if not same and len(tally["failures"]) < 3:
                                tally["failures"].append({"case": case.label, "payload": payload.label,
                                                          "total": total, "lengths": lengths})
                            for side in ("output", "input"):
                                tally[side][seen[side]] = tally[side].get(seen[side], 0) + 1
                                per_case[side][seen[side]] = per_case[side].get(seen[side], 0) + 1
                            tally["other_inside"] += seen["other_inside"]
                tally["fp8_direct"] = self.fp8_direct(case, cp, stream, observer)
        finally:
            if self.gpu:
                observer.uninstall()
        return tally

    def fp8_direct(self, case, cp, stream, observer) -> str:
        """A float8 tensor handed to the gather as it is: neither pynccl nor gloo has the dtype."""
        torch = self.torch
        rows = 4
        x = torch.zeros((rows, 8), dtype=torch.float8_e4m3fn, device=self.device)
        try:
            with self.progress.step(step="fp8-direct", cp=cp, case=case.label):
                out, _ = observer.call(case.call, x, [rows] * cp, rows * cp, cp, stream)
                if self.gpu:
                    torch.cuda.synchronize()
            return f"accepted ({tuple(out.shape)})"
        except Exception as exc:
            return f"rejected: {type(exc).__name__}: {str(exc)[:60]}"

    # -- latency, kernels, pools --------------------------------------------------------------
    def latency(self, mode, cp: int, group) -> List[Dict[str, Any]]:
        torch = self.torch
        case = releases.primary_case(self.cases)
        if case is None:
            return []
        payload = sweep.LATENCY_PAYLOAD if "kv" in case.kinds else sweep.HIDDEN[1]
        stream = torch.cuda.current_stream() if self.gpu else None
        rows_out = []
        for mib in self.args.sizes:
            rows = sweep.rows_for(mib * sweep.MiB, payload, cp)
            lengths, total = [rows] * cp, rows * cp
            x = sweep.make_rows(torch, 17 + group.rank_in_group, rows, payload, self.device)
            call = (lambda: case.call(x, lengths, total, cp, stream))
            row: Dict[str, Any] = {"mib": mib, "bytes": rows * cp * payload.row_bytes(), "case": case.label,
                                   "payload": payload.label}
            with self.progress.step(step="warm-up", cp=cp, mode=mode.name, mib=mib):
                for _ in range(self.args.warmup):
                    call()
                if self.gpu:
                    torch.cuda.synchronize()
            torch.distributed.barrier(group=self.world_cpu)
            segs_before = observe.segments() if self.gpu else {}
            log_start = self.log.offset()
            with self.progress.step(step="timed", cp=cp, mode=mode.name, mib=mib):
                if self.gpu:
                    from . import gpu

                    times = gpu.timed_calls(call, self.args.iters)
                else:
                    times = []
                    for _ in range(self.args.iters):
                        t0 = time.perf_counter()
                        call()
                        times.append((time.perf_counter() - t0) * 1e6)
            log_end = self.log.offset()
            if self.gpu and self.args.profile_calls:
                from . import gpu, trace

                path = os.path.join(self.args.out, f"trace-r{self.rank}-cp{cp}-{mode.name}-{mib}.json")
                with self.progress.step(step="profile", cp=cp, mode=mode.name, mib=mib):
                    gpu.profiled_calls(call, self.args.profile_calls, path)
                row["trace"] = trace.count_trace_file(path).describe()
                if not self.args.keep_traces:
                    os.remove(path)
            segs_after = observe.segments() if self.gpu else {}
            torch.distributed.barrier(group=self.world_cpu)
            from statistics import median

            row["p50_us"] = median(times)
            row["p90_us"] = sorted(times)[(len(times) * 9) // 10]
            row["log"] = self.log.read(log_start, log_end).describe() if self.log.path else None
            row["growths"] = sum(segs_after.values()) - sum(segs_before.values())
            rows_out.append(row)
        return rows_out

    # -- output ------------------------------------------------------------------------------
    def save(self) -> None:
        path = os.path.join(self.args.out, f"rank{self.rank}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.result, f, indent=1, default=str)
        os.replace(path + ".tmp", path)

    def finish(self) -> None:
        self.save()
        with self.progress.step(step="final barrier"):
            self.torch.distributed.barrier(group=self.world_cpu)
        self.progress.close()


def main(args) -> int:
    rank = Rank(args)
    try:
        rank.setup()
        rank.save()
        rank.run()
        rank.finish()
        return 0
    except SystemExit:
        raise
    except BaseException:
        rank.result["errors"].append(traceback.format_exc()[-4000:])
        rank.save()
        return 1
