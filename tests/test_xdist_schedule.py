"""Stage A: the units tests/xdist_schedule.py shares between ci/test.sh's workers keep each cache (and each fork
server) where it is used.

A unit split too finely would compute a module's shared results once per worker, or share state between tests that
must not; too coarse, it leaves a worker idle at the end. These checks read the test modules themselves (their AST).
"""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT
from xdist_schedule import BY_RELEASE, COST_S, DEFAULT_S, FORK_SERVER_S, PER_TEST, cost_of, longest_first, unit_of


def tree(module: str) -> ast.Module:
    return ast.parse((ROOT / module).read_text())


@pytest.mark.parametrize("module", BY_RELEASE + PER_TEST)
def test_every_module_named_exists(module):
    assert (ROOT / module).is_file(), f"{module} is named in tests/xdist_schedule.py but does not exist"


def test_the_tests_of_one_release_meet_in_one_unit_across_modules_and_nothing_else_splits_them():
    proof = "tests/tools/test_cp_gather_proof.py"
    assert unit_of(f"{proof}::test_x[0.5.11]") == "release 0.5.11"
    assert unit_of(f"{proof}::test_x[0.5.13.post1]") == "release 0.5.13.post1"
    assert unit_of("tests/engine/test_longest_forward.py::test_y[0.5.23-chunk off]") == "release 0.5.23"
    assert unit_of("tests/engine/test_warmup.py::test_p[extra3-prompts3-2-0.5.12]") == "release 0.5.12"
    assert unit_of("tests/tools/test_cli_env.py::test_s[0.5.6-ALL_ON]") == "release 0.5.6"
    # a test of such a module that names no release: its module's unit
    assert unit_of(f"{proof}::test_without_release") == proof
    # an NCCL version is not a release: the module stays one unit
    assert unit_of("tests/engine/test_race_guard.py::test_z[2.28.9-True]") == "tests/engine/test_race_guard.py"
    # a module outside BY_RELEASE is never split by release
    assert unit_of("tests/engine/test_settings.py::test_w[0.5.11]") == "tests/engine/test_settings.py"
    assert unit_of("tests/test_bootstrap.py::test_v[0.5.10]") == "tests/test_bootstrap.py::test_v[0.5.10]"


def _caches(module: str) -> list:
    """Module-level names bound to an empty dict: the per-release result caches."""
    return [target.id for node in tree(module).body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name) and isinstance(node.value, ast.Dict) and not node.value.keys]


@pytest.mark.parametrize("module", BY_RELEASE)
def test_a_per_release_cache_is_only_ever_indexed_by_the_release(module):
    """Split per release, a module's cache must hold nothing that two releases share."""
    caches = set(_caches(module))
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in caches:
            assert isinstance(node.slice, ast.Name) and node.slice.id == "release", \
                f"{module}:{node.lineno}: {node.value.id}[{ast.unparse(node.slice)}]"


@pytest.mark.parametrize("module", PER_TEST)
def test_a_per_test_module_shares_nothing_between_its_tests(module):
    """Split per test, a module-level cache would be filled once per unit: there must be none, and a module-scoped
    fixture must serve one test at most."""
    body = tree(module)
    assert not _caches(module), f"{module} caches results at module level: list it in BY_RELEASE or neither"
    scoped = {f.name for f in body.body if isinstance(f, ast.FunctionDef) for d in f.decorator_list
              if isinstance(d, ast.Call) and any(k.arg == "scope" for k in d.keywords)}
    for name in scoped:
        users = [f.name for f in body.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test")
                 and name in {a.arg for a in f.args.args}]
        assert len(users) <= 1, f"{module}: fixture {name} is shared by {users}"


def test_the_costliest_units_go_first():
    units = {"tests/engine/test_settings.py": [f"tests/engine/test_settings.py::t{i}" for i in range(5)],
             "tests/test_bootstrap.py::test_v": ["tests/test_bootstrap.py::test_v"],
             "release 0.5.6": ["tests/engine/test_warmup_bounded.py::test_a_healthy_warmup_x[0.5.6]",
                               "tests/engine/test_warmup_bounded.py::test_b[0.5.6]"],
             "tests/test_bootstrap.py::test_w": ["tests/test_bootstrap.py::test_w"],
             "tests/engine/test_race_guard.py": [f"tests/engine/test_race_guard.py::t{i}" for i in range(20)]}
    order = longest_first(units)
    assert order == ["release 0.5.6", "tests/test_bootstrap.py::test_v", "tests/test_bootstrap.py::test_w",
                     "tests/engine/test_race_guard.py", "tests/engine/test_settings.py"]
    costs = [cost_of(unit, units[unit]) for unit in order]
    assert costs == sorted(costs, reverse=True)
    assert costs[0] == COST_S["tests/engine/test_warmup_bounded.py::test_a_healthy_warmup"] + DEFAULT_S + FORK_SERVER_S
    assert costs[-1] == 5 * DEFAULT_S
    assert all(seconds > 0 for seconds in COST_S.values())


def test_every_cost_names_a_test_that_exists():
    """A key of COST_S that prefixes no test (a test renamed or removed) would silently stop counting."""
    names = set()
    for path in ROOT.glob("tests/**/test_*.py"):
        module = str(path.relative_to(ROOT))
        names.add(module)
        names |= {f"{module}::{f.name}" for f in ast.walk(tree(module)) if isinstance(f, ast.FunctionDef)}
    for key in COST_S:
        assert any(name.startswith(key) for name in names), f"COST_S names {key!r}, which is no test"
