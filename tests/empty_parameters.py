"""A parametrized test whose parameter list is empty fails, instead of being skipped.

Why: pytest's default for ``@pytest.mark.parametrize(name, [])`` (or a fixture with ``params=[]``) is to skip the test
with "got empty parameter set". Lists here are computed from what is on disk (captured runs, wheels, the releases of a
set, the racy pins among them), so a list that comes out empty would turn a check into a skip, and a run would be
green on nothing. With these hooks such a test fails at its setup, naming itself and the empty argument names.
A test that may rightly have nothing to check where it runs says so in words: ``params=X or [None]`` and a
``pytest.skip("why")`` (or ``pytest.fail`` under ``CI``) for the ``None`` case.

Loaded by tests/conftest.py (which imports the hook) and, in tests/test_meta.py, with ``-p empty_parameters`` on a
planted test.
"""

from __future__ import annotations

from typing import Optional

import pytest

#: the reason pytest gives (``_pytest.mark.structures.get_empty_parameterset_mark``, pytest 7-9)
EMPTY = "got empty parameter set"


def empty_reason(item) -> Optional[str]:
    """pytest's reason when ``item`` was parametrized over an empty list, else None."""
    for mark in item.iter_markers("skip"):
        reason = str(mark.kwargs.get("reason", mark.args[0] if mark.args else ""))
        if reason.startswith(EMPTY):
            return reason
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    reason = empty_reason(item)
    if reason:
        pytest.fail(f"{item.nodeid}: {reason}, so it would pass on nothing: make the list non-empty where the "
                    "test runs, or give the empty case a skip with its reason in words", pytrace=False)
