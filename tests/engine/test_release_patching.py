"""Stage B: the plugin against real sglang releases, each check in a process of its own, forked from the release's
fork server (tests/forkserver.py: the environment, ``sys.path`` and ``.pth`` line of a fresh interpreter, with
torch and the other third-party libraries already imported; sglang and the plugin are imported by the check).

Nothing is faked here: the modules are the releases' own (see conftest); only
torchvision, which has no CPU build, is the stub described in tests/stubs.
"""

import json

import pytest

from conftest import last_line, nccl, pinned_nccl, run_python

pytestmark = pytest.mark.release

CP_UTILS = "sglang.srt.layers.utils.cp_utils"
KV = "cp_all_gather_reorganized_into_tensor_kv_cache"
NONKV = "cp_all_gather_reorganized_into_tensor"
#: The patch mechanics, judged as on NCCL 2.30.7 (nothing races there). On a release's pinned NCCL 2.28.9 or 2.29.7
#: the race guard holds every CP gather instead: test_status_on_the_pinned_nccl and tests/engine/test_race_guard.py.
ON = {"SGLANG_CP_SYMM": "1", **nccl("2.30.7")}

EXPECTED = {
    "0.5.8": {"nsa.reorganized_tp": "patched", "nsa.rerange_output_tp": "patched",
              "pool.attention_cp_registration": "patched"},
    "0.5.9": {"nsa.reorganized": "upstream", "nsa.rerange_output": "upstream",
              "pool.attention_cp_registration": "patched"},
    "0.5.10": {"cp_utils.reorganized": "patched", "cp_utils.reorganized_kv_cache": "patched",
               "nsa.reorganized": "upstream", "nsa.rerange_output": "upstream",
               "pool.attention_cp_registration": "patched"},
    "0.5.11": {"cp_utils.reorganized": "upstream", "cp_utils.reorganized_kv_cache": "patched",
               "cp_utils.rerange_output": "upstream", "pool.attention_cp_registration": "patched"},
    "0.5.12": {"cp_utils.reorganized": "upstream", "cp_utils.reorganized_kv_cache": "upstream",
               "cp_utils.rerange_output": "upstream", "pool.attention_cp_registration": "upstream"},
    "0.5.23": {"cp.zigzag": "upstream", "cp.interleave": "upstream", "cp.interleave_gather": "upstream",
               "pool.attention_cp_registration": "upstream"},
}
MODULES = {"0.5.8": "sglang.srt.layers.attention.nsa.utils",
           "0.5.9": "sglang.srt.layers.attention.nsa.utils",
           "0.5.10": f"{CP_UTILS}, sglang.srt.layers.attention.nsa.utils"}


def states(release, code, env=ON):
    return json.loads(last_line(run_python(release, code, env, fresh=False)))


@pytest.mark.parametrize("release", list(EXPECTED))
def test_status_per_release(release):
    got = states(release, f"""
        import json, sglang_cp_symm.engine.plugin as p, sglang_cp_symm as s
        import {MODULES.get(release, CP_UTILS)}
        import sglang.srt.distributed.device_communicators.pynccl_allocator
        assert p.activate()
        targets = s.status()['targets']
        print(json.dumps({{k: v['state'] for k, v in targets.items()}} | {{"pool shape": targets['pool.attention_cp_registration']['detail']}}))
    """)
    shape = got.pop("pool shape")
    assert got == EXPECTED[release]
    # the pool fix recognised how this release's SymmetricMemoryContext names its pool
    assert shape == {"0.5.8": "_mem_pool_ctx", "0.5.9": "_mem_pool_ctx", "0.5.10": "_mem_pool_ctx",
                     "0.5.11": "_pool_id"}.get(release, shape)


@pytest.mark.parametrize("release", list(EXPECTED))
def test_status_on_the_pinned_nccl(release):
    """With the NCCL the release's torch pins: where it races (0.5.11-0.5.21), every CP gather is guarded."""
    got = states(release, f"""
        import json, sglang_cp_symm.engine.plugin as p, sglang_cp_symm as s
        import {MODULES.get(release, CP_UTILS)}
        import sglang.srt.distributed.device_communicators.pynccl_allocator
        assert p.activate()
        print(json.dumps({{k: v['state'] for k, v in s.status()['targets'].items()}}))
    """, env={"SGLANG_CP_SYMM": "1", **pinned_nccl(release)})
    from sglang_cp_symm.engine.nccl_policy import NcclVersion, line_for
    from sglang_cp_symm.pins import pin_for
    from sglang_cp_symm.releases import Release

    if not line_for(NcclVersion.parse(pin_for(Release.parse(release)).nccl)).race:
        assert got == EXPECTED[release]
        return
    pool = got.pop("pool.attention_cp_registration")
    assert pool == ("guarded" if EXPECTED[release]["pool.attention_cp_registration"] == "patched" else "upstream")
    assert got.pop("race_guard") == "guarded"
    assert got == {name: "guarded" for name in EXPECTED[release] if not name.startswith("pool.")}


@pytest.mark.parametrize("release", ["0.5.10", "0.5.11", "0.5.12"])
def test_off_by_default_changes_nothing(release):
    out = last_line(run_python(release, f"""
        import {CP_UTILS} as m, sglang_cp_symm.engine.plugin as p, wrapt
        before = (m.{KV}, m.{NONKV})
        assert p.activate() is False
        assert (m.{KV}, m.{NONKV}) == before
        assert not any(hasattr(f, '__sglang_cp_symm_rewritten__') for f in before)
        assert "use_symmetric_memory" not in vars(m) or "{release}" != "0.5.10"
        print("unchanged")
    """, env={}, fresh=False))
    assert out == "unchanged"


def test_bad_value_one_message_and_off():
    result = run_python("0.5.11", f"""
        import {CP_UTILS} as m, sglang_cp_symm.engine.plugin as p, wrapt
        assert p.activate() is False
        assert not hasattr(m.{KV}, '__sglang_cp_symm_rewritten__')
        print("off")
    """, env={"SGLANG_CP_SYMM": "maybe"}, fresh=False)
    assert last_line(result) == "off"
    lines = [l for l in result.stderr.splitlines() if "SGLANG_CP_SYMM" in l]
    assert len(lines) == 1 and "'maybe'" in lines[0] and "1/true/yes/on" in lines[0]


SHAPE_CHANGED = f"""
    import {CP_UTILS} as m
    def {KV}(input_tensor, total_len, cp_size, forward_batch, stream):
        return input_tensor  # a future release that moved the gather elsewhere
    m.{KV} = {KV}
    import sglang_cp_symm.engine.plugin as p, sglang_cp_symm as s
"""


def test_shape_mismatch_warns_and_leaves_the_function_alone():
    result = run_python("0.5.11", SHAPE_CHANGED + f"""
    before = m.{KV}
    p.activate()
    assert m.{KV} is before
    print(s.status()['targets']['cp_utils.reorganized_kv_cache']['state'])
    """, env=ON, fresh=False)
    assert last_line(result) == "skipped"
    warning = [l for l in result.stderr.splitlines() if "left untouched" in l]
    assert len(warning) == 1 and KV in warning[0] and "0.5.11" in warning[0]


def test_strict_mode_refuses_to_start_on_a_skip():
    result = run_python("0.5.11", SHAPE_CHANGED + "    p.activate()\n    print('started')\n", env={**ON, "SGLANG_CP_SYMM_STRICT": "1"}, fresh=False)
    assert result.returncode != 0 and "started" not in result.stdout
    assert "strict mode" in result.stderr and KV in result.stderr


def test_strict_mode_refuses_a_bad_value():
    result = run_python("0.5.11", "import sglang_cp_symm.engine.plugin as p; p.activate(); print('started')",
                        env={"SGLANG_CP_SYMM": "maybe", "SGLANG_CP_SYMM_STRICT": "1"}, fresh=False)
    assert result.returncode != 0 and "SGLANG_CP_SYMM='maybe'" in result.stderr


@pytest.mark.parametrize("release", ["0.5.10", "0.5.11"])
def test_idempotent_and_unpatch_restores_everything(release):
    out = last_line(run_python(release, f"""
        import sys, types, wrapt
        import {CP_UTILS} as m
        import sglang.srt.distributed.device_communicators.pynccl_allocator as pa
        copy = types.ModuleType("name_importer"); sys.modules["name_importer"] = copy
        copy.{KV} = m.{KV}                      # `from cp_utils import ...` made before the plugin
        originals = (m.{KV}, m.{NONKV}, pa.SymmetricMemoryContext.__init__, dict(vars(m)))
        import sglang_cp_symm as s
        s.patch(); first = (m.{KV}, copy.{KV}, pa.SymmetricMemoryContext.__init__)
        s.patch(); second = (m.{KV}, copy.{KV}, pa.SymmetricMemoryContext.__init__)
        assert first == second and first[0] is first[1]
        assert hasattr(m.{KV}, '__sglang_cp_symm_rewritten__') and m.{KV}.__wrapped__ is originals[0]
        s.unpatch()
        assert (m.{KV}, m.{NONKV}, pa.SymmetricMemoryContext.__init__) == originals[:3]
        assert copy.{KV} is originals[0]
        assert set(vars(m)) == set(originals[3])     # injected names are gone too
        s.patch(); assert hasattr(m.{KV}, '__sglang_cp_symm_rewritten__')   # and it can be applied again
        print("ok")
    """, env=nccl("2.30.7"), fresh=False))
    assert out == "ok"


@pytest.mark.parametrize("order", ["plugin-first", "module-first"])
def test_import_orders_and_name_imported_copies(order):
    plugin = "import sglang_cp_symm.engine.plugin as p; assert p.activate()"
    module = f"import {CP_UTILS} as m"
    out = last_line(run_python("0.5.10", f"""
        import sys, wrapt
        {plugin if order == 'plugin-first' else module}
        {module if order == 'plugin-first' else plugin}
        from {CP_UTILS} import {KV} as late_copy
        assert hasattr(m.{KV}, '__sglang_cp_symm_rewritten__'), type(m.{KV})
        assert late_copy is m.{KV}
        print("patched")
    """, env=ON, fresh=False))
    assert out == "patched"


@pytest.mark.parametrize("release", ["0.5.11", "0.5.12", "0.5.23"])
def test_real_entry_point_through_sglang_load_plugins(release):
    out = states(release, f"""
        import json
        from sglang.srt.plugins import load_plugins
        load_plugins()                       # sglang's own loader finds the installed entry point
        import {MODULES.get(release, CP_UTILS)}   # as the scheduler's imports do after it
        import sglang.srt.distributed.device_communicators.pynccl_allocator
        import sglang_cp_symm as s
        print(json.dumps({{k: v['state'] for k, v in s.status()['targets'].items()}}))
    """)
    assert out == EXPECTED[release]


def test_sglang_plugins_filter_is_respected():
    out = states("0.5.11", """
        import json
        from sglang.srt.plugins import load_plugins
        load_plugins()
        import sglang_cp_symm as s
        print(json.dumps(s.status()['targets']))
    """, env={**ON, "SGLANG_PLUGINS": "someone_else"})
    assert out == {}


@pytest.mark.parametrize("release", list(EXPECTED))
def test_register_claims_hold_in_the_release_source(release):
    """Every target the register calls 'upstream' here really allocates its output in the context,
    read from the release's own files (layers/cp imports half the engine, so no import here)."""
    out = states(release, f"""
        import ast, json, importlib.util, pathlib
        from sglang_cp_symm.targets import targets_for
        from sglang_cp_symm.releases import Release
        from sglang_cp_symm.engine.rewrite import already_in_context, find_gather_call
        root = pathlib.Path(importlib.util.find_spec("sglang").origin).parent.parent
        found = {{}}
        for t in targets_for(Release.parse("{release}")):
            tree = ast.parse((root / (t.module.replace(".", "/") + ".py")).read_text())
            node = tree
            for part in t.function.split("."):
                node = next(n for n in node.body if getattr(n, "name", None) == part)
            find_gather_call(node, t)
            found[t.name] = "upstream" if already_in_context(node, t) else "patched"
        print(json.dumps(found))
    """)
    assert out == {k: ("upstream" if v == "upstream" else "patched") for k, v in EXPECTED[release].items()
                   if not k.startswith("pool.")}


def test_racy_nccl_guards_outputs_and_the_pool_fix():
    """NCCL 2.29.7 (given: no NCCL on CPU): output registration alone would engage the racy kernel, so the plugin
    changes no function and the race guard holds the gathers, unless SGLANG_CP_SYMM_ALLOW_NCCL_RACE=1."""
    code = f"""
        import json, {CP_UTILS} as m, wrapt
        import sglang.srt.distributed.device_communicators.pynccl_allocator
        import sglang_cp_symm as s
        from sglang_cp_symm.engine.settings import read_settings
        st = s.patch(read_settings(), nccl="2.29.7")
        print(json.dumps([{{k: v["state"] for k, v in st["targets"].items()}},
                          hasattr(m.{KV}, '__sglang_cp_symm_rewritten__'), st["nccl"]["hazard"] is not None]))
    """
    held, wrapped, hazard = json.loads(last_line(run_python("0.5.11", code, env=ON, fresh=False)))
    assert held["cp_utils.reorganized_kv_cache"] == "guarded" and not wrapped and hazard
    assert held["pool.attention_cp_registration"] == "guarded" and held["race_guard"] == "guarded"
    allowed, wrapped, _ = json.loads(last_line(run_python("0.5.11", code, env={**ON, "SGLANG_CP_SYMM_ALLOW_NCCL_RACE": "1"}, fresh=False)))
    assert allowed["cp_utils.reorganized_kv_cache"] == "patched" and wrapped
    assert allowed["pool.attention_cp_registration"] == "patched"
