"""What the plugin costs, each figure paired against its baseline in the same run (CPU, no GPU needed).

    .venv/bin/python bench/overhead.py [--runs 41] [--release 0.5.11]

1. Start-up of a fresh interpreter (``python -c pass``): a clean virtual environment
   against one where sglang-cp-symm is installed as pip installs it (its ``.pth`` in
   site-packages), with ``SGLANG_CP_SYMM`` unset, off and on; runs interleaved, median
   of ``--runs``; and the modules each one ends with. Targets: +1 ms off, +20 ms on.
2. One call of a real CP all-gather (``cp_all_gather_reorganized_into_tensor_kv_cache`` of
   the release, on a one-rank gloo group): sglang's function against the one the plugin
   installed in its place. The plugin installs the rewritten function itself, with no
   wrapper in between (checked: the module's attribute *is* the rewritten function), so
   nothing is added beyond the symmetric context the rewrite opens, which upstream's
   fixed releases open the same way; on CPU that context is sglang's null context, and
   the difference is within the noise of a ~200 us gloo call. Target: 1 us.
3. One ``with`` of a symmetric context with the plugin on (``engine.context_hooks``)
   against the plugin off: opened outside the register's modules (a TP all-reduce), where
   the plugin adds nothing, and by a CP all-gather the watchdog measures, through the
   opener the patcher binds in the register's modules. The context class is a stand-in
   with empty ``__enter__``/``__exit__`` (sglang's needs a GPU), so the figures are the
   plugin's own cost; the watchdog's signal reads nothing here. Target: 1 us for contexts
   the plugin does not know. With the race guard engaged, its hooks go on the class: a TP
   context (its group is read, it routes) and a guarded DCP one opened elsewhere (sglang's
   enter and exit do not run) are measured the same way.
Minimum over repeats for the per-call figures (the noise of a shared machine only adds); the context figures
interleave the plugin off and on in every repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_environments(work: Path) -> dict:
    """Two empty venvs of this interpreter's base Python; the plugin (with wrapt) pip-installed into one."""
    base = getattr(sys, "_base_executable", sys.executable)
    envs = {}
    for name in ("clean", "plugin"):
        subprocess.run([base, "-m", "venv", "--without-pip", str(work / name)], check=True)
        envs[name] = str(work / name / "bin" / "python")
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(ROOT)], check=True)
    import wrapt

    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                    f"wrapt=={wrapt.__version__}"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", envs["plugin"], "install", "-q", "--no-deps", "--no-index",
                    "--find-links", str(wheels), "sglang-cp-symm", "wrapt"], check=True)
    return envs


def pth_line(repeat: int) -> dict:
    """The ``.pth`` line itself, executed as ``site`` executes it, switch unset and off: exact, no process noise."""
    line = (ROOT / "sglang_cp_symm_bootstrap.pth").read_text().strip()
    code = compile(line, "sglang_cp_symm_bootstrap.pth", "exec")
    out = {}
    for name, value in (("switch unset", None), ("SGLANG_CP_SYMM=0", "0")):
        saved = os.environ.pop("SGLANG_CP_SYMM", None)
        if value is not None:
            os.environ["SGLANG_CP_SYMM"] = value
        try:
            out[name] = round(min(timeit.repeat(lambda: exec(code, {}), number=20000, repeat=repeat)) / 20000 * 1e6, 3)
        finally:
            os.environ.pop("SGLANG_CP_SYMM", None)
            if saved is not None:
                os.environ["SGLANG_CP_SYMM"] = saved
    return out


def startup(envs: dict, runs: int) -> dict:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_")}
    cases = {"clean": (envs["clean"], {}), "switch unset": (envs["plugin"], {}),
             "SGLANG_CP_SYMM=0": (envs["plugin"], {"SGLANG_CP_SYMM": "0"}),
             "SGLANG_CP_SYMM=1": (envs["plugin"], {"SGLANG_CP_SYMM": "1"})}
    times = {name: [] for name in cases}
    for _ in range(runs):  # interleaved, so that a busy moment of the machine hits every case alike
        for name, (python, extra) in cases.items():
            started = time.perf_counter()
            subprocess.run([python, "-c", "pass"], env={**clean_env, **extra}, check=True)
            times[name].append(time.perf_counter() - started)
    modules = {}
    for name, (python, extra) in cases.items():
        out = subprocess.run([python, "-c", "import sys, json; print(json.dumps(sorted(sys.modules)))"],
                             env={**clean_env, **extra}, capture_output=True, text=True, check=True).stdout
        modules[name] = json.loads(out)
    baseline = statistics.median(times["clean"])
    return {name: {"median_ms": round(statistics.median(t) * 1e3, 2),
                   "added_ms": round((statistics.median(t) - baseline) * 1e3, 2),
                   "modules": len(modules[name]),
                   "added_modules": sorted(set(modules[name]) - set(modules["clean"]))}
            for name, t in times.items()}


WRAPPED_CALL = r"""
import json, sys, timeit, torch
sys.setrecursionlimit(10000)
from sglang.srt.distributed import parallel_state as ps
from sglang_cp_symm.tools.rehearsal import Recorder, cpu_gather_group
ps.init_distributed_environment(world_size=1, rank=0, distributed_init_method="tcp://127.0.0.1:%(port)d",
                                local_rank=0, backend="gloo")
ps._ATTN_CP = cpu_gather_group(ps, 1, 0)
import sglang.srt.layers.utils.cp_utils as cp
keep = Recorder().install_all_gather()
held = [cp.cp_all_gather_reorganized_into_tensor_kv_cache]  # in a list: the patch rebinds module-level copies
import sglang_cp_symm
sglang_cp_symm.patch(nccl="2.30.7")
original, wrapper = held[0], cp.cp_all_gather_reorganized_into_tensor_kv_cache
assert wrapper is not original, sglang_cp_symm.status()["targets"]
from sglang_cp_symm.engine.patching import is_rewritten
rewritten = wrapper  # the module attribute, called below as sglang's callers call it
meta = cp.ContextParallelMetadata(max_rank_len=[64], per_rank_actual_token=[64])
from types import SimpleNamespace
batch = SimpleNamespace(attn_cp_metadata=meta)
x = torch.randn(64, 4, 8)
args = (x, torch.tensor(64), 1, batch, None) if "total_len" in original.__code__.co_varnames else (x, 1, batch, None)
def best(fn, number=2000, repeat=%(repeat)d):
    return min(timeit.repeat(lambda: fn(*args), number=number, repeat=repeat)) / number * 1e6
result = {}
for _ in range(3):  # alternate, keep each one's best
    for name, fn in (("sglang's function", original), ("the plugin's function (what callers now call)", wrapper)):
        result[name] = min(result.get(name, 1e9), best(fn))
from sglang.srt.distributed.device_communicators.pynccl_allocator import use_symmetric_memory
from sglang.srt.layers.dp_attention import is_allocation_symmetric
group = ps._ATTN_CP
def context_alone():
    with use_symmetric_memory(group, disabled=not is_allocation_symmetric()):
        pass
result["the rewrite's symmetric context alone (sglang's null context here)"] = min(
    timeit.repeat(context_alone, number=20000, repeat=%(repeat)d)) / 20000 * 1e6
result["no wrapper between caller and the rewritten function"] = is_rewritten(wrapper) and wrapper.__wrapped__ is original
print(json.dumps(result))
"""


def wrapped_call(release: str, repeat: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import run_python  # the release environments of ci/envs.sh

    from sglang_cp_symm.tools.rehearsal import free_port

    result = run_python(release, WRAPPED_CALL % {"port": free_port(), "repeat": repeat}, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"the wrapped-call measurement failed on sglang {release}:\n{result.stderr[-3000:]}")
    us = json.loads(result.stdout.strip().splitlines()[-1])
    same = us.pop("no wrapper between caller and the rewritten function")
    us = {k: round(v, 3) for k, v in us.items()}
    us["difference (the symmetric context the rewrite opens, as upstream does)"] = round(
        us["the plugin's function (what callers now call)"] - us["sglang's function"], 3)
    us["added beyond that context"] = 0.0 if same else float("nan")
    return us


def context_hooks(repeat: int) -> dict:
    from sglang_cp_symm.engine import context_hooks as hooks
    from sglang_cp_symm.engine.watchdog import PoolWatchdog

    from types import ModuleType, SimpleNamespace

    class Context:  # stand-in for SymmetricMemoryContext (needs a GPU): the plugin's cost, nothing else
        def __init__(self, group):
            self.group_coordinator = group

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def use_symmetric_memory(group_coordinator, disabled=False):  # sglang's, as modules outside the register bind it
        return Context(group_coordinator)

    register = ModuleType("register_module")  # a module of the register: the patcher binds the opener there
    register.use_symmetric_memory = use_symmetric_memory
    tp, cp = SimpleNamespace(unique_name="tp:0"), SimpleNamespace(unique_name="attn_cp:1")

    def tp_all_reduce():  # a context opened outside the register's modules
        with use_symmetric_memory(tp):
            pass

    register.cp = cp  # one the watchdog measures (probes: no GPU here, so they read nothing), defined in the module
    exec("def cp_all_gather():\n    with use_symmetric_memory(cp):\n        pass\n", vars(register))
    cp_all_gather = register.cp_all_gather

    def dcp_gather():  # a DCP context opened outside the register's modules, held by its group
        with use_symmetric_memory(cp):
            pass

    dog = PoolWatchdog(reserved=lambda: 0, pools=dict, stats=lambda pool: {"segments": 0, "bytes": 0})

    def once(fn, number=20000):
        return timeit.timeit(fn, number=number) / number * 1e6

    table = dog.table  # the plugin object's ContextTable, shared by its watchdog and its race guard
    cases = {"unknown opener": tp_all_reduce, "CP all-gather": cp_all_gather, "TP, guard engaged": tp_all_reduce,
             "CP group, guarded": dcp_gather}
    bare = {name: [] for name in cases}
    hooked = {name: [] for name in cases}
    dog.watch(cp_all_gather.__code__)
    for _ in range(repeat):  # interleaved: each round times every case without the plugin, then with it
        for name, fn in cases.items():
            bare[name].append(once(fn))
        table.listener = dog
        unbind = table.bind(register, ["use_symmetric_memory"])
        unhook = None
        try:
            for name in ("unknown opener", "CP all-gather"):
                hooked[name].append(once(cases[name]))
            table.guarded.update({"attn_cp", "dcp"})  # the race guard engaged (its GPU check already answered)
            unhook = table.hook_class(Context)  # ... and its class hooks on, for the groups' contexts opened elsewhere
            for name in ("TP, guard engaged", "CP group, guarded"):
                hooked[name].append(once(cases[name]))
        finally:
            table.guarded.clear()
            if unhook is not None:
                unhook()
            unbind()
            table.listener = None
    table.clear_roles(hooks.WATCH)
    bare = {name: min(times) for name, times in bare.items()}
    hooked = {name: min(times) for name, times in hooked.items()}
    return {name: {"bare_us": round(bare[name], 3), "hooked_us": round(hooked[name], 3),
                   "added_us": round(hooked[name] - bare[name], 3)} for name in bare}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=41, help="fresh interpreters per start-up case (at least 20)")
    parser.add_argument("--release", default="0.5.11", help="the sglang release of the wrapped-call figure")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if args.runs < 20:
        parser.error("--runs must be at least 20")
    with tempfile.TemporaryDirectory(prefix="cp-symm-bench-") as work:
        print(f"building two virtual environments (clean, with the plugin) in {work} ...", flush=True)
        envs = build_environments(Path(work))
        print(f"start-up, {args.runs} fresh interpreters per case, interleaved ...", flush=True)
        start = startup(envs, args.runs)
    for name, row in start.items():
        added = f"{row['added_ms']:+.2f} ms" if name != "clean" else "baseline"
        print(f"  start-up  {name:<18} median {row['median_ms']:7.2f} ms  {added:<10}  {row['modules']} modules"
              + (f" (+{', '.join(row['added_modules'])})" if row["added_modules"] else ""))
    line = pth_line(args.repeat)
    for name, value in line.items():
        print(f"  .pth line {name:<18} {value:.3f} us per interpreter (the line alone, as site runs it)")
    print(f"wrapped CP all-gather, sglang {args.release}, one call (best of {args.repeat} x 3 x 2000) ...", flush=True)
    call = wrapped_call(args.release, args.repeat)
    for name, value in call.items():
        print(f"  call      {name:<42} {value:8.3f} us")
    print("symmetric context with the plugin's hooks, one `with` (stand-in class) ...", flush=True)
    ctx = context_hooks(args.repeat)
    for name, row in ctx.items():
        print(f"  context   opened by {name:<18} bare {row['bare_us']:.3f} us, hooked {row['hooked_us']:.3f} us, "
              f"added {row['added_us']:+.3f} us")
    print(json.dumps({"startup": start, "pth_line_us": line, "wrapped_call_us": call, "context_us": ctx}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
