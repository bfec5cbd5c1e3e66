"""How ``bash ci/test.sh`` shares the tests between its pytest-xdist workers (conftest's scheduler hook).

Why: with ``--dist loadscope`` a test module is one unit of work, and xdist hands units out in order of their test
count. A check on a release costs a fork server for that release (tests/forkserver.py: about 8 s of CPU to import
torch, transformers and the rest once) and then about 1 s a check forked from it; a module's per-release results
(``_PROOFS``, ``_results``) are computed once per worker. So the tests of one release should meet in one worker,
and the long units should not be left to the end, where one worker would finish alone.

What changes, and only this (which tests run, and what they assert, stay as they are):
- a test of a ``BY_RELEASE`` module whose parameters name a release belongs to that release's unit, with every
  such test of every ``BY_RELEASE`` module: one fork server and one computation of each cache per release (the
  caches are indexed by the release only, tests/test_xdist_schedule.py); the other tests of such a module are one
  unit per module (they share its fork servers);
- a test of a ``PER_TEST`` module (no state shared between its tests: each starts fresh interpreters) is one unit;
- any other module is one unit;
- units go out longest first (``cost_of``: the seconds of each test, ``COST_S``, plus a fork server's start for a
  release unit), and a worker gets its next unit only when it is on its last test, so no worker sits on a queued
  unit while another has run dry.
"""

from __future__ import annotations

import re

#: Modules whose release-parametrised tests run in their release's unit (module-level caches per release, checks
#: forked from the release's fork server).
BY_RELEASE = (
    "tests/tools/test_cp_gather_proof.py",
    "tests/engine/test_race_guard.py",
    "tests/engine/test_longest_forward.py",
    "tests/engine/test_warmup_bounded.py",
    "tests/engine/test_plan_agrees.py",
    "tests/engine/test_release_patching.py",
    "tests/engine/test_warmup.py",
    "tests/engine/test_nothing_applied_twice.py",
    "tests/tools/test_cli_env.py",
    "tests/tools/test_patches_and_sweep.py",
    "tests/tools/test_doctor.py",
)

#: Modules whose tests share nothing (each starts its own fresh interpreters): one unit per test.
PER_TEST = (
    "tests/test_bootstrap.py",
    "tests/engine/test_patch_failures.py",
    "tests/bench/test_stage_d.py",
    "tests/engine/test_cp_openers.py",
)

#: Wall seconds of one test (the first key that prefixes its node id, parameters left out, wins), rounded from
#: ``--durations=0`` runs on the development machine (2026-12-06: per module on two releases, and the whole suite
#: on three workers, with other work on the machine); a test of a per-release cache's module carries the cache's
#: cost on its first test, so the figure of that test is the cost of one release. A test not listed counts
#: ``DEFAULT_S``. Only the order of the units depends on these.
COST_S = {
    "tests/test_readme.py::test_every_checked_block_of_readme_matches_what_produces_it": 63,
    "tests/engine/test_warmup_bounded.py::test_a_healthy_warmup": 15,   # 2 s deadlines: the stalls side by side
    "tests/bench/test_stage_d.py::test_dry_run": 16,
    "tests/engine/test_warmup_deadline.py": 2,                          # its stalled rank: 17 s
    "tests/engine/test_plan_agrees.py": 9,                              # the engine forked, the doctor fresh
    "tests/tools/test_cp_gather_proof.py::test_every_module_imports": 6,
    "tests/tools/test_cp_gather_proof.py::test_a_module_that_fails": 6,
    "tests/engine/test_longest_forward.py::test_the_warmups_longest": 0.4,
    "tests/engine/test_race_guard.py::test_on_the_pinned_racy": 2,
    "tests/test_bootstrap.py": 7,                                       # a fresh sglang interpreter or two
    "tests/engine/test_patch_failures.py": 8,
    "tests/engine/test_context_hooks.py": 9,
    "tests/engine/test_cp_openers.py": 1,                               # one wheel's .py files read
    "tests/tools/test_doctor.py::test_on_a_racy_pinned_nccl": 1.5,      # three doctors forked
    "tests/tools/test_doctor.py": 3,
    "tests/engine/test_report.py": 2,
    "tests/engine/test_warmup.py::test_random_ids": 19,                 # two fresh interpreters
    "tests/engine/test_warmup.py": 1.5,
    "tests/engine/test_release_patching.py::test_register_claims": 0.2,
    "tests/engine/test_release_patching.py": 1.5,
    "tests/engine/test_nothing_applied_twice.py": 2,
    "tests/tools/test_cli_env.py::test_the_light_commands": 3,          # fresh: the engine must not be imported
    "tests/tools/test_cli_env.py::test_status_and_doctor": 0.01,
    "tests/tools/test_cli_env.py::test_the_demo": 4,
    "tests/tools/test_cli_env.py": 2,
    "tests/tools/test_patches_and_sweep.py": 4,
    "tests/engine/test_alloc_counter.py": 0.2,
    "tests/engine/test_rewrite_refusals.py": 0.15,
    "tests/engine/test_nccl_inputs.py": 0.07,
    "tests/test_release_strings.py": 0.08,
}
DEFAULT_S = 0.05
#: Starting a release's fork server (tests/forkserver.py), counted once for each release unit.
FORK_SERVER_S = 8

_RELEASE = re.compile(r"(?<![\d.])0\.\d+\.\d+(?:\.?post\d+)?(?![\d.])")


def release_of(nodeid: str):
    """The release a test's parameters name, or None."""
    rest = nodeid.partition("::")[2]
    params = rest[rest.find("[") + 1:-1] if rest.endswith("]") and "[" in rest else ""
    found = _RELEASE.search(params)
    return found.group(0) if found else None


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to (see the module docstring)."""
    module = nodeid.partition("::")[0]
    if module in BY_RELEASE:
        release = release_of(nodeid)
        return f"release {release}" if release else module
    if module in PER_TEST:
        return nodeid
    return module


def test_cost(nodeid: str) -> float:
    """Expected seconds of one test (``COST_S``)."""
    name = nodeid.partition("[")[0]
    for prefix, seconds in COST_S.items():
        if name.startswith(prefix):
            return seconds
    return DEFAULT_S


def cost_of(unit: str, nodeids) -> float:
    """Expected seconds of ``unit``, which holds the tests ``nodeids``."""
    return sum(test_cost(n) for n in nodeids) + (FORK_SERVER_S if unit.startswith("release ") else 0)


def longest_first(units: dict) -> list:
    """The names of ``units`` (name: its tests' node ids), costliest first; equal costs stay in collection order."""
    order = {unit: i for i, unit in enumerate(units)}
    return sorted(units, key=lambda unit: (-cost_of(unit, units[unit]), order[unit]))


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
