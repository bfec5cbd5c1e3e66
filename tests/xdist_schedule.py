"""How ``bash ci/test.sh`` shares the tests between its pytest-xdist workers (conftest's scheduler hook).

Why: with ``--dist loadscope`` a test module is one unit of work, and xdist hands units out in order of their test
count. The per-release proofs are one module each, and each costs a sglang process or more per release of set "ci"
(the gather rehearsal about a minute of CPU per release), so one worker ended the run alone on a long module while
the other idled; a cheap module with many parametrised cases went first.

What changes, and only this (which tests run, and what they assert, stay as they are):
- a module of ``PER_RELEASE`` is one unit per release: its module-level cache is per release (``_PROOFS``,
  ``_results``), so each release's results are still computed once, in the worker that runs that release;
- a module of ``PER_TEST`` (no state shared between its tests: each starts its own processes) is one unit per test;
- units go out longest first (``COST_S``: CPU seconds measured on the development machine, docs/ci-runs.md; a unit
  not in the table counts one second a test), and a worker gets its next unit only when it is on its last test, so
  no worker sits on a queued unit while the other has run dry.
"""

from __future__ import annotations

import re

#: Modules whose per-release results are cached per release at module level: one unit per release.
PER_RELEASE = (
    "tests/tools/test_cp_gather_proof.py",
    "tests/engine/test_race_guard.py",
    "tests/engine/test_longest_forward.py",
    "tests/engine/test_warmup_bounded.py",
    "tests/engine/test_plan_agrees.py",
)

#: Modules whose tests share nothing (each starts its own interpreters): one unit per test.
PER_TEST = (
    "tests/engine/test_release_patching.py",
    "tests/test_bootstrap.py",
    "tests/engine/test_warmup.py",
    "tests/engine/test_nothing_applied_twice.py",
    "tests/engine/test_patch_failures.py",
    "tests/tools/test_doctor.py",
    "tests/bench/test_stage_d.py",
)

#: Seconds of a unit (module, module[release] for PER_RELEASE, or module::test for PER_TEST; the first key that
#: prefixes the unit wins): CPU seconds from ``--durations=0`` runs of each module on 0.5.11 and 0.5.23 on the
#: development machine (per release: the module's CPU time over two), plus the waits a unit sleeps through by design
#: (the warm-up scenarios' 2 s deadlines). A PER_TEST unit not listed counts ``PER_TEST_S`` (one sglang interpreter,
#: about 7.5 s of CPU), any other unit one second a test. Only the order of the units depends on these figures.
COST_S = {
    "tests/engine/test_warmup_bounded.py[": 22,    # 11 s CPU + about 11 s of deadlines and stalls
    "tests/bench/test_stage_d.py::test_dry_run": 18,
    "tests/engine/test_plan_agrees.py[": 15,       # two sglang interpreters
    "tests/engine/test_longest_forward.py[": 14,
    "tests/tools/test_cp_gather_proof.py[": 12,
    "tests/engine/test_race_guard.py[": 8,         # the racy releases only
    "tests/bench/test_stage_d_logs.py": 10,
    "tests/engine/test_rewrite_acceptance.py": 6,
    "tests/engine/test_longest_forward_sources.py": 3,
    # not measured (estimates: 7.5 s a sglang interpreter they start)
    "tests/test_readme.py": 60,
    "tests/tools/test_patches_and_sweep.py": 60,
    "tests/engine/test_report.py": 38,
    "tests/engine/test_plan.py": 20,
    "tests/engine/test_context_hooks.py": 15,
    "tests/engine/test_rewrite_refusals.py": 10,
    "tests/test_wheel.py": 20,                     # pip wheel and twine check
}
PER_TEST_S = 8

_RELEASE = re.compile(r"(?<![\d.])0\.\d+\.\d+(?:\.?post\d+)?(?![\d.])")


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to (see the module docstring)."""
    module, _, rest = nodeid.partition("::")
    if module in PER_TEST:
        return nodeid
    if module in PER_RELEASE:
        params = rest[rest.find("[") + 1:-1] if rest.endswith("]") and "[" in rest else ""
        found = _RELEASE.search(params)
        return f"{module}[{found.group(0)}]" if found else module
    return module


def cost_of(unit: str, tests: int) -> float:
    """Expected CPU seconds of ``unit``, which holds ``tests`` tests (see ``COST_S``)."""
    for prefix, seconds in COST_S.items():
        if unit.startswith(prefix):
            return seconds
    return PER_TEST_S if unit.partition("::")[0] in PER_TEST else tests


def longest_first(units: dict) -> list:
    """The names of ``units`` (name: its tests), costliest first; equal costs stay in collection order."""
    order = {unit: i for i, unit in enumerate(units)}
    return sorted(units, key=lambda unit: (-cost_of(unit, len(units[unit])), order[unit]))


def make_scheduler(config, log):
    """xdist's loadscope with the units and the order above; None (xdist's own) for any other --dist."""
    if config.getoption("dist", None) != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ReleaseUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

        def schedule(self) -> None:
            # LoadScopeScheduling.schedule, with the queue in longest_first order
            assert self.collection_is_completed
            if self.collection is not None:
                for node in self.nodes:
                    self._reschedule(node)
                return
            if not self._check_nodes_have_same_collection():
                self.log("**Different tests collected, aborting run**")
                return
            self.collection = list(next(iter(self.registered_collections.values())))
            if not self.collection:
                return
            units: dict = {}
            for nodeid in self.collection:
                units.setdefault(unit_of(nodeid), {})[nodeid] = False
            for unit in longest_first(units):
                self.workqueue[unit] = units[unit]
            for _ in range(max(0, len(self.nodes) - len(self.workqueue))):
                unused, _assigned = self.assigned_work.popitem()
                unused.shutdown()
            for node in self.nodes:
                self._assign_work_unit(node)
            for node in self.nodes:
                self._reschedule(node)
            if not self.workqueue:
                for node in self.nodes:
                    node.shutdown()

        def _reschedule(self, node) -> None:
            # the next unit only once the node is on its last test: a queued unit cannot move to an idle worker
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) > 1:
                return
            self._assign_work_unit(node)

    return ReleaseUnits(config, log)
