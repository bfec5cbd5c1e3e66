"""What the plugin did in this process: one status line, and the same as data (``status()``).

The line's first words say the outcome exactly: ``applied`` (every target that
needed a change got it), ``partly applied`` (the reason for each one that did not),
``nothing applied`` (with the reason), or ``guarded`` (the race guard holds every
CP and DCP all-gather off NCCL's racy symmetric kernels, ``race_guard``). Then the release, the mode, each
target's state, the NCCL decision and the warm-up and watchdog.

Everything here renders one plugin object (``activation.Plugin``: its patcher, race guard,
hook installer, warm-up state and watchdog, and the settings it was applied with); nothing is
read from anywhere else, so ``status()``, the start-up line and the command line say the same.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from . import patching
from .plan import outcome as plan_outcome
from .warmup import status_words
from .watchdog import RUN_ID, read_run


def status_dict(plugin: Any) -> dict:
    patcher, settings = plugin.patcher, plugin.settings
    decision = patcher.decision
    return {
        "pid": os.getpid(),
        "sglang": None if patcher.release is None else str(patcher.release),
        "settings": settings.describe(),
        "mode": mode_of(settings),
        "outcome": outcome(plugin),
        "nccl": None if decision is None else {
            "version": None if decision.nccl is None else str(decision.nccl), "read_from": patcher.nccl_source,
            **{name: value for name, value in asdict(decision).items() if name != "nccl"}},
        "race_guard": plugin.race_guard.describe(),
        "targets": {name: target_entry(s) for name, s in sorted(patcher.statuses.items())},
        "notes": list(patcher.plan.notes) if patcher.plan is not None else [],
        "race_exposure": patcher.plan.exposure if patcher.plan is not None else None,
        **warmup_and_watchdog(plugin),
    }


def target_entry(status) -> dict:
    """One target as ``status()`` reports it: what happened, and the plan's verdict for it (the doctor's columns).

    Where the engine did other than planned (a proof on the code in memory refused it), the state is what
    happened and the windows and the kernel are None: what the plan said of them no longer holds."""
    entry = {"where": status.where, "state": str(status.state), "detail": status.detail}
    planned = status.planned
    if planned is not None and status.state != patching.WAITING:
        verdict = planned.verdict()
        if status.state != planned.state:
            verdict.update(output_in_window=None, send_in_window=None, kernel=None)
        verdict["state"] = str(status.state)
        entry["verdict"] = verdict
    return entry


def warmup_and_watchdog(plugin: Any) -> dict:
    """The warm-up's and the watchdog's state in this process, and the ranks' records of this launch."""
    run_id = os.environ.get(RUN_ID)
    ranks = read_run(plugin.settings.report_dir, run_id) if run_id else None
    return {
        "hooks": plugin.installer.describe(),
        "warmup": dict(plugin.warmup.result) or None,
        "watchdog": plugin.watchdog.describe(),
        "ranks": ranks["ranks"] if ranks else {},
    }


def mode_of(settings) -> str:
    if not settings.enabled:
        return "off"
    return "strict" if settings.strict else "on"


def outcome(plugin: Any) -> str:
    """``applied``, ``partly applied: <why>``, ``nothing applied: <why>``, ``guarded: ...``, or ``off``/``waiting
    for import``: ``plan.outcome`` over what was done in this process."""
    patcher, guard = plugin.patcher, plugin.race_guard
    if not plugin.settings.enabled and not patcher.active:
        return "off"
    done = [(s.name, s.state, str(s)) for s in patcher.statuses.values()
            if not (s.name == patching.GUARD_ENTRY and s.state == patching.GUARDED)]
    reason = guard.plan.reason if guard.engaged else None
    return plan_outcome(done, reason, guard.lifted)


def status_line(plugin: Any) -> str:
    patcher, settings = plugin.patcher, plugin.settings
    parts = ", ".join(f"{name}={status}" for name, status in sorted(patcher.statuses.items()))
    policy = f"; {patcher.decision.line()}" if patcher.decision is not None else ""
    if patcher.plan is not None and patcher.plan.exposure:
        policy += f"; race: {patcher.plan.exposure}"
    head = outcome(plugin).split(":", 1)[0]
    return (f"sglang-cp-symm: {head}; sglang {patcher.release or 'not installed'}, mode {mode_of(settings)}; "
            f"{parts or 'no targets'}{policy}; {hooks_line(plugin)}")


def hooks_line(plugin: Any) -> str:
    """The warm-up's and the watchdog's part: before the server starts, what the warm-up will do and its deadline;
    once planned (``status()`` in the server's process), the longest forward, whence, its CP buffers, the outcome."""
    settings = plugin.settings
    warm = status_words(settings, plugin.warmup.result)
    watch = "off (SGLANG_CP_SYMM_WATCHDOG=0)" if not settings.watchdog else "on"
    problems = [f"{name} {state}" for name, state in sorted(plugin.installer.skipped().items())]
    return f"warm-up {warm}; watchdog {watch}" + (f" ({'; '.join(problems)})" if problems else "")
