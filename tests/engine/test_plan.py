"""The plan (``engine.plan``) over the whole matrix, in-process: every release of the register (each one's real
source, read from its published wheel), every NCCL line of the policy, every switch combination that changes a
decision and every NCCL setting the plan reads. Plus the rows that pin the verdict's facts (the doctor's table),
and "facts over version numbers": a build whose source differs from its release number.

The agreement of the engine with the doctor in fresh processes, on real releases, is
``test_plan_agrees.py``; this file checks that the one function both of them call is right.

Facts behind the rows (register and NCCL sources in ``targets`` and ``nccl_policy``): R1 0.5.10 allocates both
cp_utils gather outputs outside the pool, 0.5.11 the KV one, 0.5.12+ none (PR #22914, #24040). R2 up to 0.5.11 the
allocator registers a segment only with the communicator that created it (PR #21392). N2: 2.27-2.28 need send and
receive registered; N3: >= 2.29.2 the receive buffer alone; N4: 2.28.0-2.30.6 race on sm90+.
"""

from __future__ import annotations

import dataclasses
import itertools
import zipfile
from pathlib import Path

import pytest

from sglang_cp_symm.engine.nccl_env import effects
from sglang_cp_symm.engine.nccl_policy import NcclVersion, line_for
from sglang_cp_symm.engine.plan import Action, Facts, State, make_plan, outcome, read_sources
from sglang_cp_symm.engine.settings import Settings
from sglang_cp_symm.engine.source_facts import NEEDS_PATCH, UPSTREAM, SourceFact, module_path
from sglang_cp_symm.releases import Release
from sglang_cp_symm.targets import FIRST_SUPPORTED, LAST_SUPPORTED, TARGETS

WHEELS = Path(__file__).resolve().parents[2] / ".cache" / "wheels"
RELEASES = [f"0.5.{n}" for n in range(FIRST_SUPPORTED.patch, LAST_SUPPORTED.patch + 1)]
NCCLS = [None, "2.26.5", "2.27.5", "2.28.9", "2.29.1", "2.29.7", "2.30.7", "2.31.2", "2.32.6"]
SWITCHES = [dict(send=s, allow_nccl_race=a) for s, a in itertools.product((False, True), repeat=2)]
NCCL_SETTINGS = [{}, {"NCCL_WIN_ENABLE": "0"}, {"NCCL_SYM_NOWIN_ENABLE": "1"}, {"NCCL_SYM_KERNEL": "AllGatherLL"},
                 {"NCCL_ALGO": "Ring"}]
GPUS = [None, (9, 0), (8, 0), (10, 0)]


def wheel_reader(release: str):
    """``read(module)`` over the release's published wheel (the files a default install puts on disk)."""
    wheel = next(WHEELS.glob(f"sglang-{release}-*.whl"), None)
    if wheel is None:
        pytest.fail(f"no wheel for sglang {release} in {WHEELS}: run ci/fetch-wheels.sh")
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())

    def read(module: str):
        path = module_path(module)
        return archive.read(path).decode("utf-8") if path in names else None

    return read


_SOURCES: dict = {}


def sources_of(release: str):
    if release not in _SOURCES:
        _SOURCES[release] = read_sources(Release.parse(release), wheel_reader(release))
    return _SOURCES[release]


def facts_for(release: str, nccl, enabled=True, env=None, gpu=None, **switches) -> Facts:
    sources, pool = sources_of(release)
    version = None if nccl is None else NcclVersion.parse(nccl)
    return Facts(Release.parse(release), Settings(enabled=enabled, **switches), sources, pool,
                 version, "given", tuple(effects(env or {}, version)), gpu)


@pytest.mark.parametrize("release", RELEASES)
def test_the_plan_keeps_its_rules_over_the_whole_matrix(release):
    """For every NCCL line, switch combination, NCCL setting and GPU: the rules the plan promises hold."""
    cases = 0
    for nccl, switches, env, gpu in itertools.product(NCCLS, SWITCHES, NCCL_SETTINGS, GPUS):
        facts = facts_for(release, nccl, env=env, gpu=gpu, **switches)
        plan = make_plan(facts)
        cases += 1
        assert plan.problem is None, plan.problem
        sym_off = "NCCL_WIN_ENABLE" in env
        defeated = bool(env) and ("NCCL_SYM_NOWIN_ENABLE" in env or "NCCL_SYM_KERNEL" in env)
        racy = nccl is not None and line_for(NcclVersion.parse(nccl)).race and facts.sm90
        guard_expected = not sym_off and not switches["allow_nccl_race"] and facts.sm90 and (nccl is None or racy)
        assert plan.guard.engaged == guard_expected, (nccl, switches, env, gpu, plan.guard)
        for t in plan.targets:
            source = facts.source(t.name).state
            where = (release, t.name, nccl, switches, env, gpu)
            # facts over numbers: a target is upstream exactly when its source opens the context (and nothing is added)
            assert (t.state == State.UPSTREAM) == (source == UPSTREAM and not t.send and not guard_expected), where
            assert t.state != State.PATCHED or t.output or t.send, where
            assert not t.output or source == NEEDS_PATCH, where  # only an allocation outside the context moves
            if guard_expected:
                assert t.state == State.GUARDED and t.action == Action.GUARD and not (t.output or t.send), where
                assert t.kernel is (True if defeated and NcclVersion.parse(nccl or "0.0.0") >= (2, 29, 0) else False), where
            if nccl is None and not (sym_off and t.state != State.GUARDED):
                assert t.kernel in (None, False), where
            if sym_off:
                assert t.kernel is False and not guard_expected, where
            if "NCCL_ALGO" in env and nccl is not None and NcclVersion.parse(nccl) >= (2, 31, 0):
                assert t.kernel is False, where  # 2.31+: NCCL_ALGO covering AllGather turns its symmetric kernels off
            if t.kernel and racy:
                assert t.hazard, where
            if t.output or t.send:  # the plugin changes only what the policy allows on this NCCL
                assert plan.decision.patch_outputs or plan.decision.stage_send, where
    assert cases == len(NCCLS) * len(SWITCHES) * len(NCCL_SETTINGS) * len(GPUS)


@pytest.mark.parametrize("release", RELEASES)
def test_with_the_plugin_off_nothing_is_planned(release):
    plan = make_plan(facts_for(release, "2.30.7", enabled=False))
    assert all(t.action == Action.NONE for t in plan.entries()), plan.entries()
    assert not plan.changes_something()


def _target(plan, name):
    entry = plan.entry(name)
    assert entry is not None, [t.name for t in plan.targets]
    return entry


# release, target, nccl, switches -> (output in window, send in window, kernel, hazard?, action contains)
ROWS = [
    ("0.5.11", "cp_utils.reorganized_kv_cache", "2.30.7", dict(enabled=False), (False, False, False, False, "SGLANG_CP_SYMM=1")),  # R1
    ("0.5.11", "cp_utils.reorganized_kv_cache", "2.30.7", {}, (True, False, True, False, None)),               # R1+R2+N3
    ("0.5.10", "cp_utils.reorganized_kv_cache", "2.27.7", {}, (True, False, False, False, "SEND=1")),          # N2
    ("0.5.10", "cp_utils.reorganized_kv_cache", "2.27.7", dict(send=True), (True, True, True, False, None)),   # N2 staged
    ("0.5.11", "cp_utils.reorganized_kv_cache", "2.28.9", dict(send=True, allow_nccl_race=True),
     (True, True, True, True, "2.30.7")),                                                                      # N4 accepted
    ("0.5.11", "cp_utils.reorganized_kv_cache", "2.29.7", {}, (False, False, False, False, "2.30.7")),         # guarded
    ("0.5.12", "cp_utils.reorganized_kv_cache", "2.29.7", dict(enabled=False), (True, False, True, True, "2.30.7")),  # upstream racy
    ("0.5.12", "cp_utils.reorganized_kv_cache", "2.28.9", dict(enabled=False), (True, False, False, False, "2.30.7")),
    ("0.5.23", "cp.zigzag", "2.30.7", {}, (True, False, True, False, None)),                                   # upstream + N3
    ("0.5.23", "cp.zigzag", "2.26.5", {}, (True, False, False, False, "2.30.7")),                              # no windows
]


@pytest.mark.parametrize("release,name,nccl,switches,expected", ROWS)
def test_verdict_row(release, name, nccl, switches, expected):
    enabled = switches.pop("enabled", True) if isinstance(switches, dict) else True
    t = _target(make_plan(facts_for(release, nccl, enabled=enabled, **switches)), name)
    out, send, kernel, hazard, action = expected
    assert (t.output_in_window, t.send_in_window, t.kernel, t.hazard is not None) == (out, send, kernel, hazard), t
    if action is None:
        assert t.action_to_take is None, t
    else:
        assert action in (t.action_to_take or ""), t


def test_without_the_plugin_0_5_11s_upstream_output_sits_in_a_tp_registered_segment():
    t = _target(make_plan(facts_for("0.5.11", "2.30.7", enabled=False)), "cp_utils.reorganized")   # R2
    assert t.source == UPSTREAM and not t.output_in_window and t.kernel is False


def test_a_development_build_whose_source_still_needs_the_patch_is_patched_whatever_its_number_says():
    """0.5.12's number says the KV gather is fixed upstream; a dev build carrying 0.5.11's cp_utils is patched."""
    sources, pool = sources_of("0.5.12")
    old = dict(sources_of("0.5.11")[0])
    dev = tuple((name, old.get(name, fact)) for name, fact in sources)
    facts = Facts(Release.parse("0.5.12"), Settings(enabled=True), dev, pool,
                  NcclVersion.parse("2.30.7"), "given")
    plan = make_plan(facts)
    t = _target(plan, "cp_utils.reorganized_kv_cache")
    assert (t.state, t.output, t.kernel) == (State.PATCHED, True, True)
    assert any("the source decides" in note and "reorganized_kv_cache" in note for note in plan.notes), plan.notes


def test_a_vendor_build_whose_source_already_opens_the_context_is_upstream_whatever_its_number_says():
    sources, pool = sources_of("0.5.11")
    new = dict(sources_of("0.5.12")[0])
    vendor = tuple((name, new.get(name, fact)) for name, fact in sources)
    plan = make_plan(Facts(Release.parse("0.5.11"), Settings(enabled=True), vendor, pool,
                           NcclVersion.parse("2.30.7"), "given"))
    t = _target(plan, "cp_utils.reorganized_kv_cache")
    assert t.state == State.UPSTREAM and not t.output
    assert plan.pool.action == Action.PATCH  # the allocator is still 0.5.11's: the CP pool fix still applies


def test_a_source_of_another_shape_is_skipped_with_the_rewrites_reason():
    sources, pool = sources_of("0.5.11")
    odd = tuple((name, SourceFact("changed shape", "the output is allocated in a loop") if name.endswith("kv_cache")
                 else fact) for name, fact in sources)
    plan = make_plan(Facts(Release.parse("0.5.11"), Settings(enabled=True), odd, pool,
                           NcclVersion.parse("2.30.7"), "given"))
    t = _target(plan, "cp_utils.reorganized_kv_cache")
    assert t.state == State.SKIPPED and "loop" in t.words and t.action == Action.NONE
    assert outcome([(e.name, e.state, e.words) for e in plan.entries()]).startswith("partly applied")


def test_windows_off_in_nccl_means_no_kernel_and_no_guard():
    plan = make_plan(facts_for("0.5.21", "2.29.7", env={"NCCL_WIN_ENABLE": "0"}))
    assert not plan.guard.engaged and not plan.engages_kernel()


def test_below_sm90_the_guard_is_not_needed():
    plan = make_plan(facts_for("0.5.21", "2.29.7", gpu=(8, 0)))
    assert not plan.guard.engaged and "below sm90" in plan.guard.reason


@pytest.mark.parametrize("release", [None, "0.5.5", "0.6.0"])
def test_a_release_outside_the_register_plans_nothing_and_says_why(release):
    facts = Facts(None if release is None else Release.parse(release), Settings(enabled=True))
    plan = make_plan(facts)
    assert plan.problem and not plan.entries()
    assert dataclasses.replace(facts, settings=Settings()) != facts  # the facts are a value, compared by content
