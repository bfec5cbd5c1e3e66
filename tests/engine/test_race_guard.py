"""The race guard (issue 16): on a racy NCCL no CP or DCP context of the running release routes into the pool.

The guard's plan is checked for every NCCL line; its hooks on the real ``SymmetricMemoryContext`` class of
every release of the proof set whose pinned NCCL is racy (0.5.11-0.5.21), after the plugin was applied as the
engine applies it. What cannot run here is faked, and only that: sglang's own ``__enter__``/``__exit__`` begin
and end allocation to a CUDA pool, so two stand-ins record "routing on" and "routing off", and instances are
made without ``__init__`` (it reads the current CUDA device). The group names the contexts carry are those the
release's own source builds its groups with (``tests/sglang_groups.py``), every group of it, not literals of the
test. Each CP and DCP gather's own buffers leaving the pool on the real functions is shown by the proof
(``tests/tools/test_cp_gather_proof.py``, state ``guarded``, and its DCP test).
"""

import json

import pytest

from conftest import PROOF_RELEASES, last_line, require_release, run_python
from sglang_cp_symm.engine import nccl_env
from sglang_cp_symm.engine.nccl_policy import NcclVersion, decide, line_for
from sglang_cp_symm.engine.race_guard import plan_guard
from sglang_cp_symm.pins import pin_for
from sglang_cp_symm.releases import Release

R = Release.parse


@pytest.mark.parametrize("nccl,engaged", [
    ("2.27.5", False), ("2.28.0", True), ("2.28.9", True), ("2.29.2", True), ("2.29.7", True), ("2.30.4", True),
    ("2.30.6", True), ("2.30.7", False), ("2.32.3", False), (None, True)])
def test_the_guard_engages_exactly_on_the_racy_lines_and_on_an_unknown_nccl(nccl, engaged):
    version = None if nccl is None else NcclVersion.parse(nccl)
    plan = plan_guard(decide(version, False, False), R("0.5.18"), allow_race=False)
    assert plan.engaged is engaged, plan
    assert not plan_guard(decide(version, False, True), R("0.5.18"), allow_race=True).engaged
    if engaged:
        assert plan.groups == ("attn_cp", "attn_cp_overlap", "dcp") and "ALLOW_NCCL_RACE=1" in plan.reason
        assert plan.fix and ("2.30.7" in plan.fix or "SGLANG_NCCL_SO_PATH" in plan.fix)


def test_no_dcp_group_before_the_release_that_has_decode_cp():
    plan = plan_guard(decide(NcclVersion.parse("2.28.9"), False, False), R("0.5.14"), allow_race=False)
    assert plan.engaged and "dcp" not in plan.groups


@pytest.mark.parametrize("env,off,defeated", [
    ({}, None, None),
    ({"NCCL_WIN_ENABLE": "0"}, "NCCL_WIN_ENABLE=0", None),
    ({"NCCL_WIN_ENABLE": "1"}, None, None),
    ({"NCCL_SYM_NOWIN_ENABLE": "1"}, None, "NCCL_SYM_NOWIN_ENABLE=1"),
    ({"NCCL_SYM_KERNEL": "^"}, None, None),
    ({"NCCL_SYM_KERNEL": "AllGather_LL"}, None, "NCCL_SYM_KERNEL=AllGather_LL"),
    ({"NCCL_ALGO": "NVLS"}, None, None)])
def test_the_nccl_settings_that_turn_symmetric_kernels_off_or_defeat_the_guard(env, off, defeated):
    found = nccl_env.effects(env)
    symmetric_off, defeated_by = (nccl_env.settings_that(found, "symmetric_off"),
                                  nccl_env.settings_that(found, "defeats_guard"))
    assert (symmetric_off or "").startswith(off or "") and bool(symmetric_off) == bool(off)
    assert (defeated_by or "").startswith(defeated or "") and bool(defeated_by) == bool(defeated)
    plan = plan_guard(decide(NcclVersion.parse("2.29.7"), False, False), R("0.5.18"), False, symmetric_off,
                      defeated_by)
    assert plan.engaged is (off is None)
    assert (plan.defeated_by is not None) is bool(defeated)


def test_a_long_value_is_cut_in_the_line():
    line = nccl_env.effects({"NCCL_SYM_KERNEL": "x" * 500})[0].line()
    assert len(line) < 200


RACY = [r for r in PROOF_RELEASES if line_for(NcclVersion.parse(pin_for(R(r)).nccl)).race]

PROBE = """
    import importlib, json
    import sglang_cp_symm
    import sglang.srt.distributed.device_communicators.pynccl_allocator as pa
    from sglang_cp_symm.tools.rehearsal import release_targets
    from sglang_cp_symm.engine import nccl_library, race_guard
    from sglang_cp_symm.engine.settings import Settings

    cls = pa.SymmetricMemoryContext
    ROUTING = []

    def enter(self):
        ROUTING.append(self.group_coordinator.unique_name)
        return self

    def leave(self, *exc_info):
        ROUTING.remove(self.group_coordinator.unique_name)
        return False

    cls.__enter__, cls.__exit__ = enter, leave
    for module in release_targets()[2]:  # the CP modules, as a server imports them
        importlib.import_module(module)

    class Group:
        def __init__(self, name):
            self.unique_name = name

    def routed(name):
        ctx = object.__new__(cls)  # sglang's __init__ reads the current CUDA device
        ctx.group_coordinator, ctx.is_graph_capture = Group(name), False
        with ctx:
            inside = list(ROUTING)
        return inside == [name] and not ROUTING

    names = NAMES
    out = {}
    for config, settings in (("pinned", Settings(enabled=True)),
                             ("allowed", Settings(enabled=True, allow_nccl_race=True))):
        status = sglang_cp_symm.patch(settings)
        out[config] = {"status": {k: status[k] for k in ("outcome", "race_guard")},
                       "states": {n: t["state"] for n, t in status["targets"].items()},
                       "routed": {name: routed(name) for name in names}}
        sglang_cp_symm.unpatch()
        out[config]["after_unpatch"] = {name: routed(name) for name in names}
    # a GPU below sm90: at the first guarded context the guard lifts, and that context routes as sglang wrote it
    nccl_library.sm90_or_later = lambda: (False, "compute capability 8.x")
    sglang_cp_symm.patch(Settings(enabled=True))
    out["sm80"] = {"routed": {name: routed(name) for name in names},
                   "lifted": sglang_cp_symm.status()["race_guard"]["lifted"],
                   "outcome": sglang_cp_symm.status()["outcome"]}
    sglang_cp_symm.unpatch()
    print(json.dumps(out))
"""

_results: dict = {}


def group_names(release: str) -> tuple:
    """(the CP/DCP group names, every other group name) that this release's own source builds its groups with
    (tests/sglang_groups.py, on the installed release), each as a ``unique_name`` would carry it."""
    from sglang_groups import read_groups

    root = require_release(release)
    groups = read_groups(lambda path: (root / path).read_text() if (root / path).is_file() else None)
    cp = sorted({b.name for role in groups.roles.values() if role for b in role.built})
    other = sorted({b.name for b in groups.literals} - set(cp))
    assert cp and "tp" in other, (release, cp, other)
    return [f"{n}:{i + 3}" for i, n in enumerate(cp)], [f"{n}:{i}" for i, n in enumerate(other)]


def results(release: str) -> dict:
    if release not in _results:
        cp, other = group_names(release)
        _results[release] = json.loads(last_line(run_python(release, PROBE.replace("NAMES", repr(cp + other)), fresh=False)))
        _results[release]["cp_groups"] = cp
    return _results[release]


@pytest.mark.release
@pytest.mark.parametrize("release", RACY)
def test_on_the_pinned_racy_nccl_no_cp_or_dcp_context_routes_and_every_other_group_does(release):
    out = results(release)["pinned"]
    assert out["status"]["race_guard"]["engaged"] and out["status"]["outcome"].startswith("guarded: "), out
    cp_groups = results(release)["cp_groups"]  # the names the release's own source builds its CP/DCP groups with
    assert any(n.startswith("dcp:") for n in cp_groups) is (R(release) >= R("0.5.15")), cp_groups
    assert len(out["routed"]) > len(cp_groups) + 5, out["routed"]  # and every other group the release builds
    for name, routed in out["routed"].items():
        assert routed is (name not in cp_groups), (name, out)
    gathers = {n: s for n, s in out["states"].items() if n not in ("race_guard",) and not n.startswith("pool.")}
    assert gathers and set(gathers.values()) <= {"guarded", "absent"}, out["states"]
    assert all(out["after_unpatch"].values()), out  # unpatch gives sglang's class back: every group routes


@pytest.mark.release
@pytest.mark.parametrize("release", RACY)
def test_with_the_opt_in_every_context_routes_as_sglang_wrote_it(release):
    out = results(release)["allowed"]
    assert not out["status"]["race_guard"]["engaged"] and all(out["routed"].values()), out
    assert "guarded" not in out["states"].values(), out["states"]


@pytest.mark.release
@pytest.mark.parametrize("release", RACY[-1:])
def test_below_sm90_the_guard_lifts_at_the_first_guarded_context(release):
    out = results(release)["sm80"]
    assert out["lifted"] == "compute capability 8.x" and all(out["routed"].values()), out
    assert out["outcome"].startswith("nothing applied: the race guard lifted (compute capability 8.x"), out
