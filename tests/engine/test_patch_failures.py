"""Stage B: no exception from any patch step reaches an import; the module stays as it was and the status says why.

Every step of patching is made to fail in turn, on sglang 0.5.11's real modules, with
send staging on so that a name is injected and must be taken back. After each failure
the function is the original object, the module holds exactly the names it held, sglang's
context class is untouched (the plugin never changes it unless the race guard is
engaged), the CP pool fix has no router where it failed, and the target reads
``skipped: patching failed: ...``. The first test goes through
a real ``import`` statement (plugin first, then the engine module, as a scheduler
does); strict mode turns the same failure into one line and exit status 1.
"""

import json

import pytest

from conftest import last_line, nccl, run_python

pytestmark = pytest.mark.release

CP_UTILS = "sglang.srt.layers.utils.cp_utils"
ALLOCATOR = "sglang.srt.distributed.device_communicators.pynccl_allocator"
KV = "cp_all_gather_reorganized_into_tensor_kv_cache"
QUIET = {"SGLANG_CP_SYMM_WARMUP": "0", "SGLANG_CP_SYMM_WATCHDOG": "0"}  # only the patcher touches the engine
ON_SEND = {"SGLANG_CP_SYMM": "1", "SGLANG_CP_SYMM_SEND": "1", **QUIET, **nccl("2.27.7")}

IMPORT_WITH_A_FAILURE = f"""
    import json, sys
    import sglang_cp_symm.engine.plugin as plugin
    from sglang_cp_symm.engine import activation, patching
    def injected(*args, **kwargs):
        raise RuntimeError("injected")
    patching.compile_rewritten = injected
    assert plugin.activate()
    activation.current().patcher.on_settled.append(injected)      # a callback that fails once everything is settled
    import {CP_UTILS} as m                             # the post-import hook runs inside this import
    import {ALLOCATOR}
    import sglang_cp_symm as s
    targets = s.status()["targets"]
    print(json.dumps({{"kv": targets["cp_utils.reorganized_kv_cache"], "vars": sorted(vars(m)),
                      "marked": hasattr(m.{KV}, "__sglang_cp_symm_rewritten__")}}))
"""


def test_a_failure_during_the_engine_import_leaves_the_module_importable_and_unpatched():
    result = run_python("0.5.11", IMPORT_WITH_A_FAILURE, env=ON_SEND)
    got = json.loads(last_line(result))
    assert got["kv"]["state"] == "skipped"
    assert got["kv"]["detail"] == "patching failed: RuntimeError: injected"
    assert not got["marked"] and "cp_symm_stage_send" not in got["vars"]
    assert "Traceback" not in result.stderr
    warnings = [l for l in result.stderr.splitlines() if "failed after patching" in l]
    assert len(warnings) == 1  # the failing callback: reported, not raised into the import


def test_strict_mode_stops_at_that_import_with_one_line():
    result = run_python("0.5.11", IMPORT_WITH_A_FAILURE, env={**ON_SEND, "SGLANG_CP_SYMM_STRICT": "1"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [l for l in result.stderr.splitlines() if "strict mode" in l]
    assert "patching failed: RuntimeError: injected" in line and CP_UTILS in line


STEPS = f"""
    import json, wrapt
    import {CP_UTILS} as m
    import {ALLOCATOR} as pa
    import sglang_cp_symm as s
    from sglang_cp_symm.engine import activation, patching, plan, pool
    from sglang_cp_symm.engine.settings import read_settings

    class Injected(RuntimeError):
        pass

    def raiser(*args, **kwargs):
        raise Injected("injected")

    STEPS = [  # (step, object, attribute)
        ("the NCCL decision", plan, "decide"),
        ("the plan", patching, "make_plan"),
        ("reading the sources", plan, "target_state"),
        ("the context names", patching, "symmetric_context_names"),
        ("the source proof", patching, "prove_source"),
        ("the output rule", patching, "output_state"),
        ("the send rule", patching, "find_send_edit"),
        ("the names the inserted code reads", patching, "injected_names"),
        ("resolving those names", patching, "resolve_names"),
        ("compiling the copy", patching, "compile_rewritten"),
        ("building the function", patching, "rebuilt_function"),
        ("rebinding copies", patching.Patcher, "_rebind_copies"),
        ("the watchdog", activation.plugin().patcher, "watchdog"),  # the patcher's reference only (the hooks keep theirs)
        ("the pool's shape", pool, "context_shape"),
        ("building the pool's router", pool, "GroupPoolRouter"),
    ]

    FUNCTIONS = {{"cp_utils.reorganized": "cp_all_gather_reorganized_into_tensor",
                 "cp_utils.reorganized_kv_cache": "{KV}",
                 "cp_utils.rerange_output": "cp_all_gather_rerange_output"}}

    def snapshot():
        return {{"functions": {{k: getattr(m, f) for k, f in FUNCTIONS.items()}}, "vars": set(vars(m)),
                 "context": dict(vars(pa.SymmetricMemoryContext))}}

    clean = snapshot()
    results = {{}}
    for step, owner, attribute in STEPS:
        saved = getattr(owner, attribute)
        stand_in = {{"watchdog": type("Watchdog", (), {{"watch": staticmethod(raiser)}})}}.get(attribute, raiser)
        setattr(owner, attribute, stand_in)
        try:
            status = s.patch(read_settings(), nccl="2.27.7")["targets"]
        finally:
            setattr(owner, attribute, saved)
        now = snapshot()
        results[step] = {{
            "states": {{k: status[k]["state"] + ": " + status[k]["detail"] for k in list(FUNCTIONS) + ["pool.attention_cp_registration"]}},
            "untouched": sorted(k for k in FUNCTIONS if now["functions"][k] is clean["functions"][k]),
            "added": sorted(now["vars"] - clean["vars"]), "removed": sorted(clean["vars"] - now["vars"]),
            "context_untouched": now["context"] == clean["context"],
            "router": activation.current().table.router is not None}}
        s.unpatch()
        assert snapshot() == clean
    healthy = s.patch(read_settings(), nccl="2.27.7")["targets"]
    results["none"] = {{k: v["state"] + ": " + v["detail"] for k, v in healthy.items()}}
    print(json.dumps(results))
"""

#: Steps whose failure concerns the targets (the pool fix is patched all the same), and the pool fix's own.
TARGET_STEPS = ["the context names", "the source proof", "the send rule", "the names the inserted code reads",
                "resolving those names", "compiling the copy", "building the function", "rebinding copies",
                "the watchdog"]
OUTPUT_STEPS = ["the output rule"]  # called for the one target whose output needs the patch
POOL_STEPS = ["the pool's shape", "building the pool's router"]
PLAN_STEPS = ["the NCCL decision", "the plan", "reading the sources"]  # before any target: every entry fails
FAILED = "skipped: patching failed: Injected: injected"


def test_every_step_fails_into_a_skip_with_the_module_as_it_was():
    results = json.loads(last_line(run_python("0.5.11", STEPS, env=ON_SEND, fresh=False)))
    healthy = results.pop("none")
    assert healthy["cp_utils.reorganized_kv_cache"] == "patched: output+send"  # the control: every step works
    assert healthy["cp_utils.rerange_output"] == "patched: send"
    assert healthy["pool.attention_cp_registration"] == "patched: _pool_id"
    assert set(results) == set(TARGET_STEPS + OUTPUT_STEPS + POOL_STEPS + PLAN_STEPS)
    wrong = []
    for step, got in results.items():
        states = got.pop("states")
        pool = states.pop("pool.attention_cp_registration")
        failing = set(states) if step in TARGET_STEPS + PLAN_STEPS else (
            {"cp_utils.reorganized_kv_cache"} if step in OUTPUT_STEPS else set())
        for name, state in states.items():
            if name in failing and state != FAILED:
                wrong.append(f"{step}: {name} is {state}")
            if name not in failing and not state.startswith("patched"):
                wrong.append(f"{step}: {name} is {state}")
            if name in failing and name not in got["untouched"]:
                wrong.append(f"{step}: {name} was changed")
        pool_fails = step in POOL_STEPS + PLAN_STEPS
        if (pool == FAILED) != pool_fails or not got["context_untouched"] or got["router"] == pool_fails:
            wrong.append(f"{step}: pool fix {pool}, context untouched: {got['context_untouched']}, "
                         f"router: {got['router']}")
        staged = any(not n in failing for n in states)  # a target staged its send: its helper was injected
        if got["removed"] or got["added"] != (["cp_symm_stage_send"] if staged else []):
            wrong.append(f"{step}: names added {got['added']}, removed {got['removed']}")
    assert not wrong, "\n".join(wrong)
