"""Stage A: the units tests/xdist_schedule.py shares between ci/test.sh's workers keep each cache where it is used.

A unit split too finely would compute a module's shared results once per worker, or share state between tests that
must not; too coarse, it leaves a worker idle at the end. These checks read the test modules themselves (their AST).
"""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT
from xdist_schedule import COST_S, PER_RELEASE, PER_TEST, cost_of, longest_first, unit_of


def tree(module: str) -> ast.Module:
    return ast.parse((ROOT / module).read_text())


@pytest.mark.parametrize("module", PER_RELEASE + PER_TEST)
def test_every_module_named_exists(module):
    assert (ROOT / module).is_file(), f"{module} is named in tests/xdist_schedule.py but does not exist"


def test_a_release_of_a_per_release_module_is_its_own_unit_and_nothing_else_splits_it():
    proof = "tests/tools/test_cp_gather_proof.py"
    assert unit_of(f"{proof}::test_x[0.5.11]") == f"{proof}[0.5.11]"
    assert unit_of(f"{proof}::test_x[0.5.13.post1]") == f"{proof}[0.5.13.post1]"
    assert unit_of("tests/engine/test_longest_forward.py::test_y[0.5.23-chunk off]") == \
        "tests/engine/test_longest_forward.py[0.5.23]"
    # an NCCL version is not a release: the module stays one unit
    assert unit_of("tests/engine/test_race_guard.py::test_z[2.28.9-True]") == "tests/engine/test_race_guard.py"
    assert unit_of("tests/engine/test_settings.py::test_w[0.5.11]") == "tests/engine/test_settings.py"
    assert unit_of("tests/test_bootstrap.py::test_v[0.5.10]") == "tests/test_bootstrap.py::test_v[0.5.10]"


def _caches(module: str) -> list:
    """Module-level names bound to an empty dict: the per-release result caches."""
    return [target.id for node in tree(module).body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name) and isinstance(node.value, ast.Dict) and not node.value.keys]


@pytest.mark.parametrize("module", PER_RELEASE)
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
    assert not _caches(module), f"{module} caches results at module level: list it in PER_RELEASE or neither"
    scoped = {f.name for f in body.body if isinstance(f, ast.FunctionDef) for d in f.decorator_list
              if isinstance(d, ast.Call) and any(k.arg == "scope" for k in d.keywords)}
    for name in scoped:
        users = [f.name for f in body.body if isinstance(f, ast.FunctionDef) and f.name.startswith("test")
                 and name in {a.arg for a in f.args.args}]
        assert len(users) <= 1, f"{module}: fixture {name} is shared by {users}"


def test_the_costliest_units_go_first():
    units = {"tests/engine/test_settings.py": ["a"] * 5,
             "tests/test_bootstrap.py::test_v": ["b"],
             "tests/engine/test_warmup_bounded.py[0.5.6]": ["c"] * 7,
             "tests/test_bootstrap.py::test_w": ["d"],
             "tests/engine/test_race_guard.py": ["e"] * 20}
    order = longest_first(units)
    assert order == ["tests/engine/test_warmup_bounded.py[0.5.6]", "tests/engine/test_race_guard.py",
                     "tests/test_bootstrap.py::test_v", "tests/test_bootstrap.py::test_w",
                     "tests/engine/test_settings.py"]
    costs = [cost_of(unit, len(units[unit])) for unit in order]
    assert costs == sorted(costs, reverse=True) and costs[0] == COST_S["tests/engine/test_warmup_bounded.py["]
    assert all(seconds > 0 for seconds in COST_S.values())
