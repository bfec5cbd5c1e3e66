"""The race guard's group names against the names every release of the register builds its groups with.

The guard holds the CP and DCP communicators by name (``race_guard.GUARDED_GROUPS``, compared with sglang's
``GroupCoordinator.unique_name`` before the ``:``). Its other tests feed it groups carrying those same literals, so a
rename upstream would leave them green while the guard stopped holding the group. Here the names come from the
published wheel of every release 0.5.6-0.5.23, post releases included (ci/fetch-wheels.sh, .cache/wheels), read with
``ast`` by ``tests/sglang_groups.py`` (its docstring states the rule); nothing is imported from sglang. The guard's side is
``plan_guard``, the function the engine calls, on an NCCL that carries the race (2.29.7). A renamed group fails here
with the release, the role, the name it is now built with and where.
"""

import os
import re

import pytest

from conftest import ROOT
from maint.patches import wheel_reader
from sglang_cp_symm.engine.nccl_policy import NcclVersion, decide
from sglang_cp_symm.engine.race_guard import DCP_FROM, GUARDED_GROUPS, plan_guard
from sglang_cp_symm.releases import Release
from sglang_cp_symm.targets import ATTENTION_CP_GROUP_FROM, FIRST_SUPPORTED, LAST_SUPPORTED
from sglang_groups import PARALLEL_STATE, read_groups

pytestmark = pytest.mark.release

WHEELS = sorted((ROOT / ".cache" / "wheels").glob("sglang-*.whl"))
RACY = NcclVersion.parse("2.29.7")

#: The groups sglang builds that are not CP or DCP ones, each with what it is; a name outside this and the guard's
#: fails, so a CP group renamed in a way the accessors do not show (the accessor renamed too) is still caught.
NOT_CP = {"world": "every rank", "tp": "tensor parallel", "pdmux_prefill_tp": "PD-multiplexing prefill TP",
          "attention_tp": "attention TP (the group of 0.5.6-0.5.8's NSA CP gathers, guarded by their opener)",
          "moe_dp": "MoE data parallel", "moe_ep": "MoE expert parallel", "moe_tp": "MoE tensor parallel",
          "pp": "pipeline parallel", "self_pp": "pipeline parallel within a node (0.5.19+)",
          "shared_experts_tp": "shared-experts TP (0.5.21+)"}


def version_of(wheel) -> str:
    return re.match(r"sglang-([0-9][^-]*)-", wheel.name).group(1)


REGISTER = [w for w in WHEELS if FIRST_SUPPORTED <= Release.parse(version_of(w)) <= LAST_SUPPORTED]


@pytest.fixture(scope="module", params=REGISTER or [None], ids=[version_of(w) for w in REGISTER] or ["no-wheels"])
def release_groups(request):
    if request.param is None:
        message = "no wheels of sglang 0.5.6-0.5.23 in .cache/wheels: run ci/fetch-wheels.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    version = version_of(request.param)
    return version, read_groups(wheel_reader(request.param))


def guard_misses(version: str, groups) -> list:
    """Every CP/DCP group the release builds under a name the guard does not hold, and every group name that is
    neither held nor a known non-CP group; one line each."""
    release = Release.parse(version)
    held = plan_guard(decide(RACY, False, False), release, allow_race=False).groups
    misses = []
    for role, entry in groups.roles.items():
        for built in entry.built if entry else ():
            if built.name not in held:
                misses.append(f"sglang {version}: the {role} group ({entry.accessor}() returns {built.holder}) is "
                              f"built as {built.name!r} at {built.where}, but the race guard holds only "
                              f"{'/'.join(held)} there (engine/race_guard.py GUARDED_GROUPS, DCP_FROM)")
    for built in groups.literals:
        if built.name not in GUARDED_GROUPS and built.name not in NOT_CP:
            misses.append(f"sglang {version}: a group named {built.name!r} is built at {built.where}: neither one "
                          "the race guard holds nor one known not to be CP (NOT_CP in this file)")
    return misses


def test_every_cp_and_dcp_group_is_built_under_a_name_the_guard_holds(release_groups):
    version, groups = release_groups
    misses = guard_misses(version, groups)
    assert not misses, "\n".join(misses)
    assert groups.unique_name_prefix, (f"sglang {version}: GroupCoordinator.unique_name is no longer "
                                       f"f'{{group_name}}:{{n}}' ({PARALLEL_STATE}); the guard compares its prefix")


def test_each_group_exists_from_the_release_the_guard_and_the_register_say(release_groups):
    version, groups = release_groups
    release = Release.parse(version)
    cp, dcp = groups.roles["attention-CP"], groups.roles["DCP"]
    assert (cp is not None and bool(cp.built)) is (release >= ATTENTION_CP_GROUP_FROM), (
        f"sglang {version}: attention-CP group {'built' if cp else 'absent'}, but targets.ATTENTION_CP_GROUP_FROM "
        f"is {ATTENTION_CP_GROUP_FROM}")
    assert (dcp is not None and bool(dcp.built)) is (release >= DCP_FROM), (
        f"sglang {version}: DCP group {'built' if dcp else 'absent'}, but race_guard.DCP_FROM is {DCP_FROM}")
    for role, entry in groups.roles.items():
        for holder, other, line in entry.aliases if entry else ():
            # the one alias the guard's docstring covers (SHARED_TP_CAVEAT): attn_cp_size == tp_size
            assert other == "_TP", f"sglang {version}: the {role} group {holder} is {other} ({PARALLEL_STATE}:{line})"


def planted(version: str, old: str, new: str):
    """``version``'s wheel with ``group_name="old"`` edited to ``new`` in parallel_state.py (a planted rename)."""
    wheel = next((w for w in REGISTER if version_of(w) == version), None)
    if wheel is None:
        message = f"no sglang {version} wheel in .cache/wheels: run ci/fetch-wheels.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    read = wheel_reader(wheel)
    source = read(PARALLEL_STATE)
    assert source.count(f'group_name="{old}"') == 1, (version, old)
    edited = source.replace(f'group_name="{old}"', f'group_name="{new}"')
    return lambda path: edited if path == PARALLEL_STATE else read(path)


@pytest.mark.parametrize("version,old,new,role", [
    ("0.5.23", "attn_cp", "attn_ctx", "attention-CP"),
    ("0.5.23", "dcp", "decode_cp", "DCP"),
    ("0.5.18", "attn_cp_overlap", "attn_cp_ovl", "CP-overlap"),
])
def test_a_planted_rename_fails_naming_the_release_and_the_group(version, old, new, role):
    misses = guard_misses(version, read_groups(planted(version, old, new)))
    assert any(m.startswith(f"sglang {version}: the {role} group") and repr(new) in m for m in misses), misses
    assert any(f"a group named {new!r}" in m for m in misses), misses
