"""Stage B: where the source already has what the plugin would add, the plugin adds nothing.

- a tree patched with ``patches/`` (0001, and 0002 with send staging on): every target reads
  ``upstream`` with the reason, the functions and the context class are the source's own,
  and no second CP pool is made;
- a release whose context registers every segment at exit (sglang PR #21392, as a post
  release could backport it): the pool fix stands down;
- with send staging on, on the real modules of every release environment here, every
  target is patched and every name its inserted code reads resolves in its module
  (``patching.plan_target``, the checks patching makes; the source-level report covers every wheel in
  test_rewrite_acceptance.py).
"""

import json
import shutil
import subprocess
import textwrap

import pytest

from conftest import ROOT, last_line, nccl, release_dir, run_python

pytestmark = pytest.mark.release

ALLOCATOR = "sglang.srt.distributed.device_communicators.pynccl_allocator"
CP_UTILS = "sglang.srt.layers.utils.cp_utils"
QUIET = {"SGLANG_CP_SYMM_WARMUP": "0", "SGLANG_CP_SYMM_WATCHDOG": "0"}

STATES = f"""
    import json, wrapt
    import {CP_UTILS} as m
    import {ALLOCATOR} as pa
    import sglang_cp_symm as s
    from sglang_cp_symm.engine import activation
    from sglang_cp_symm.engine.plugin import activate
    functions = {{n: getattr(m, n) for n in dir(m) if n.startswith("cp_all_gather")}}
    init = pa.SymmetricMemoryContext.__dict__["__init__"]
    assert activate()
    print(json.dumps({{
        "targets": {{k: [v["state"], v["detail"]] for k, v in s.status()["targets"].items()}},
        "functions_kept": all(getattr(m, n) is f for n, f in functions.items()),
        "init_kept": pa.SymmetricMemoryContext.__dict__["__init__"] is init
                     and not isinstance(init, wrapt.FunctionWrapper),
        "own_pools": len(activation.current().cp_pools),
        "stage_send_is_the_sources": getattr(m, "cp_symm_stage_send", None) is getattr(pa, "cp_symm_stage_send", 0),
    }}))
"""


def patched_tree(tmp_path, release, series):
    tree = tmp_path / "site"
    shutil.copytree(release_dir(release) / "sglang", tree / "sglang")
    for prefix in series:
        (patch,) = (ROOT / "patches" / f"sglang-{release}").glob(f"{prefix}-*.patch")
        result = subprocess.run(["git", "apply", "-p1", str(patch)], cwd=tree, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    return tree


def test_a_tree_patched_with_patches_is_left_as_it_is(tmp_path):
    tree = patched_tree(tmp_path, "0.5.11", ["0001"])
    got = json.loads(last_line(run_python("0.5.11", STATES, env={
        "SGLANG_CP_SYMM": "1", **QUIET, **nccl("2.30.7"), "PYTHONPATH_PREPEND": str(tree)}, fresh=False)))
    assert got["targets"]["cp_utils.reorganized_kv_cache"] == ["upstream", "the function already opens the context"]
    assert got["targets"]["pool.attention_cp_registration"] == [
        "upstream", "in the source already (sglang-cp-symm's patches/ applied)"]
    assert got["functions_kept"] and got["init_kept"] and got["own_pools"] == 0


def test_a_tree_patched_with_send_staging_is_not_staged_again(tmp_path):
    tree = patched_tree(tmp_path, "0.5.11", ["0001", "0002"])
    got = json.loads(last_line(run_python("0.5.11", STATES, env={
        "SGLANG_CP_SYMM": "1", "SGLANG_CP_SYMM_SEND": "1", **QUIET, **nccl("2.27.7"),
        "PYTHONPATH_PREPEND": str(tree)}, fresh=False)))
    staged = "the function already stages its send buffer (sglang-cp-symm's patches/ applied)"
    assert got["targets"]["cp_utils.reorganized_kv_cache"] == [
        "upstream", f"the function already opens the context; {staged}"]
    assert got["targets"]["cp_utils.reorganized"] == ["upstream", staged]
    assert got["targets"]["cp_utils.rerange_output"] == ["upstream", staged]
    assert got["functions_kept"] and got["init_kept"] and got["stage_send_is_the_sources"]


def test_the_pool_fix_stands_down_where_the_context_registers_at_exit():
    backported = textwrap.dedent(f"""
        import {ALLOCATOR} as pa
        pa.SymmetricMemoryContext._register_segments_for_comm = lambda self: None  # PR #21392, backported
    """)
    got = json.loads(last_line(run_python("0.5.11", backported + textwrap.dedent(STATES),
                                          env={"SGLANG_CP_SYMM": "1", **QUIET, **nccl("2.30.7")}, fresh=False)))
    state, detail = got["targets"]["pool.attention_cp_registration"]
    assert state == "upstream" and "sglang PR #21392" in detail and got["init_kept"]
    assert got["targets"]["cp_utils.reorganized_kv_cache"][0] == "patched"


REPORT = """
    import importlib, json
    from sglang_cp_symm.engine.patching import Refused, plan_target
    from sglang_cp_symm.releases import Release
    from sglang_cp_symm.targets import targets_for
    import sglang_cp_symm as s
    from sglang_cp_symm.engine.settings import read_settings
    release = Release.parse("{release}")
    reports = {{}}
    for target in targets_for(release):
        module = importlib.import_module(target.module)
        try:  # every check patching makes before it changes anything, the names the inserted code reads among them
            plan = plan_target(target, module, output=True, send=True)
        except Refused as refused:
            reports[target.name] = {{"refused": f"{{refused.state}}: {{refused.detail}}"}}
            continue
        reports[target.name] = {{"send": plan.send, "stage_send": "module" if "cp_symm_stage_send" in vars(module)
                                 else "injected" if "cp_symm_stage_send" in plan.inject else "missing"}}
    states = {{k: v["state"] + " " + v["detail"] for k, v in s.patch(read_settings(), nccl="2.27.7")["targets"].items()}}
    print(json.dumps([reports, states]))
"""

@pytest.mark.parametrize("release", ["0.5.8", "0.5.9", "0.5.10", "0.5.11", "0.5.12", "0.5.23"])
def test_with_send_staging_every_name_resolves_on_the_real_modules(release):
    reports, states = json.loads(last_line(run_python(release, REPORT.format(release=release), env={
        "SGLANG_CP_SYMM_SEND": "1", **QUIET, **nccl("2.27.7")}, timeout=600, fresh=False)))
    wrong = {name: report for name, report in reports.items()
             if "refused" in report or not report["send"] or report["stage_send"] == "missing"}
    assert reports and not wrong, wrong
    for name, state in states.items():
        if name.startswith("pool."):
            continue
        assert state.startswith("patched") and "send" in state, (name, state)
