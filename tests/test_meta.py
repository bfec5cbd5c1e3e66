"""The suite's own honesty: every test checks something, and no parametrized test runs on an empty list.

The rule for "checks something" (read with ``ast``, no import of the tests). A test is a function named ``test*`` at
the top of a ``test_*.py`` file under tests/, or a method of a ``Test*`` class there. It checks if its body contains
- an ``assert`` whose condition is not a constant (``assert True`` checks nothing), or
- a call of ``pytest.raises``, ``pytest.warns``, ``pytest.deprecated_call`` or ``pytest.fail``, or
- a call of a helper that checks, by the same rule: a function of the same file, or one that the file imports by
  name from another module under tests/ (``from conftest import last_line``; ``import warmup_harness as h`` then
  ``h.f()``), or
- a parameter that names a fixture of the same file or of tests/conftest.py that checks.
Nothing is exempt: a test that only runs code (a crash is its only failure) must say what it expects with an assert.

Empty parametrizations are failed by a hook at run time (``empty_parameters.py``, imported by tests/conftest.py),
since the lists are computed from what is on disk; the test below shows the hook failing a planted one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from conftest import ROOT

TESTS = ROOT / "tests"
CHECK_CALLS = {"raises", "warns", "deprecated_call", "fail"}


def _functions(tree: ast.Module) -> Dict[str, ast.AST]:
    """Module-level functions, and methods of module-level classes as ``Class.method``."""
    out: Dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out[f"{node.name}.{item.name}"] = item
    return out


def _imports(tree: ast.Module, local: Set[str]) -> Tuple[Dict[str, Tuple[str, str]], Dict[str, str]]:
    """Names imported from modules under tests/: ``{name: (module, function)}`` and ``{alias: module}``."""
    names, modules = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in local:
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in local:
                    modules[alias.asname or alias.name] = alias.name
    return names, modules


class Suite:
    """Every module under tests/ (by module name, as the tests import them) and which of its functions check."""

    def __init__(self, root: Path):
        paths = suite_files(root)
        stems = [p.stem for p in paths]
        assert len(set(stems)) == len(stems), f"two modules of one name under {root}: {sorted(stems)}"
        self.root = root
        self.trees = {p.stem: ast.parse(p.read_text(), str(p)) for p in paths}
        self.paths = {p.stem: p for p in paths}
        self.functions = {m: _functions(t) for m, t in self.trees.items()}
        self.imports = {m: _imports(t, set(self.trees)) for m, t in self.trees.items()}
        self._memo: Dict[Tuple[str, str], bool] = {}

    def _callee(self, module: str, call: ast.Call) -> Optional[Tuple[str, str]]:
        names, modules = self.imports[module]
        func = call.func
        if isinstance(func, ast.Name):
            if func.id in self.functions[module]:
                return module, func.id
            if func.id in names:
                return names[func.id]
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in modules:
            return modules[func.value.id], func.attr
        return None

    def checks(self, module: str, name: str, seen: Tuple[Tuple[str, str], ...] = ()) -> bool:
        key = (module, name)
        if key in self._memo:
            return self._memo[key]
        node = self.functions.get(module, {}).get(name)
        if node is None or key in seen:
            return False
        found = False
        for sub in ast.walk(node):
            if isinstance(sub, ast.Assert) and not isinstance(sub.test, ast.Constant):
                found = True
            elif isinstance(sub, ast.Call):
                func = sub.func
                if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "pytest"
                        and func.attr in CHECK_CALLS):
                    found = True
                else:
                    callee = self._callee(module, sub)
                    found = callee is not None and self.checks(*callee, seen=seen + (key,))
            if found:
                break
        if not found and name.split(".")[-1].startswith("test"):  # fixtures it asks for
            args = [a.arg for a in node.args.args]
            found = any(self.checks(m, a, seen + (key,)) for a in args for m in (module, "conftest")
                        if a in self.functions.get(m, {}))
        self._memo[key] = found
        return found

    def tests(self) -> List[Tuple[str, str, int]]:
        out = []
        for module, functions in self.functions.items():
            if not module.startswith("test_"):
                continue
            for name, node in functions.items():
                owner, _, short = name.rpartition(".")
                if short.startswith("test") and (not owner or owner.startswith("Test")):
                    out.append((module, name, node.lineno))
        return out

    def unchecked(self) -> List[str]:
        return [f"{self.paths[m].relative_to(self.root)}:{line} {name}: "
                "no assert, no pytest.raises/warns/fail, no helper or fixture that checks"
                for m, name, line in self.tests() if not self.checks(m, name)]


def suite_files(root: Path) -> List[Path]:
    return sorted(p for p in root.rglob("*.py") if "stubs" not in p.relative_to(root).parts)


def test_every_test_in_the_suite_checks_something():
    suite = Suite(TESTS)
    assert len(suite.tests()) > 150  # the scan found the suite (225 test functions when this was written)
    unchecked = suite.unchecked()
    assert not unchecked, "tests that cannot fail:\n" + "\n".join(unchecked)


PLANTED = '''
import pytest
from helpers import verify

def test_runs_only():
    sum([1, 2])

def test_asserts_a_constant():
    assert True

def test_calls_a_helper_that_checks_nothing():
    quiet(3)

def quiet(x):
    return x + 1

def test_positive_assert():
    assert sum([1, 2]) == 3

def test_positive_raises():
    with pytest.raises(ZeroDivisionError):
        1 / 0

def test_positive_helper_in_another_module():
    verify(3)

@pytest.fixture
def checked():
    assert 1 + 1 == 2

def test_positive_fixture(checked):
    pass

class TestGroup:
    def test_method_that_checks_nothing(self):
        quiet(1)
'''


def test_the_scan_flags_planted_assert_free_tests_and_only_those(tmp_path):
    (tmp_path / "test_planted.py").write_text(PLANTED)
    (tmp_path / "helpers.py").write_text("def verify(x):\n    assert x == 3\n")
    (tmp_path / "conftest.py").write_text("")
    flagged = Suite(tmp_path).unchecked()
    names = sorted(line.split(" ")[1].rstrip(":") for line in flagged)
    assert names == ["TestGroup.test_method_that_checks_nothing", "test_asserts_a_constant",
                     "test_calls_a_helper_that_checks_nothing", "test_runs_only"], flagged
    assert all(line.startswith("test_planted.py:") for line in flagged), flagged


def test_an_empty_parametrization_fails_instead_of_skipping(tmp_path):
    (tmp_path / "test_empty.py").write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.parametrize("capture", [])
        def test_on_captures(capture):
            assert capture

        @pytest.fixture(params=[])
        def wheel(request):
            return request.param

        def test_on_wheels(wheel):
            assert wheel

        @pytest.mark.parametrize("capture", ["one"])
        def test_on_one_capture(capture):
            assert capture == "one"
    '''))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "empty_parameters", "-q",
                           "-rA", str(tmp_path)], capture_output=True, text=True, cwd=str(tmp_path), timeout=120,
                          env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "test_on_captures[NOTSET]: got empty parameter set for (capture), so it would pass on nothing" in out, out
    assert "test_on_wheels[NOTSET]: got empty parameter set for (wheel)" in out, out
    assert "1 passed, 2 errors" in out and "skipped" not in out, out
