"""What the plugin did in this process: one INFO line, and the same as data.

sglang's scheduler process loads plugins before it configures logging, so a
line logged then would be dropped by Python's default WARNING threshold. When no
handler is configured anywhere yet, the plugin's logger gets its own stderr
handler, so the start-up line is never lost and never printed twice.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("sglang_cp_symm")


def ensure_visible() -> None:
    if logging.getLogger().handlers or logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def status_dict(patcher, settings) -> dict:
    return {
        "pid": os.getpid(),
        "sglang": None if patcher.release is None else str(patcher.release),
        "settings": settings.describe(),
        "mode": mode_of(settings),
        "nccl": None if patcher.decision is None else {
            "version": None if patcher.decision.nccl is None else str(patcher.decision.nccl),
            "read_from": patcher.nccl_source,
            "patch_outputs": patcher.decision.patch_outputs,
            "stage_send": patcher.decision.stage_send,
            "kernel_engaged": patcher.decision.kernel_engaged,
            "hazard": patcher.decision.hazard,
            "reason": patcher.decision.reason,
            "recommendation": patcher.decision.recommendation,
            "source": patcher.decision.source,
        },
        "targets": {
            name: {"where": s.where, "state": s.state, "detail": s.detail}
            for name, s in sorted(patcher.statuses.items())
        },
        **warmup_and_watchdog(),
    }


def warmup_and_watchdog() -> dict:
    """The warm-up's and the watchdog's state in this process, and the ranks' records of this launch."""
    from .hooks import INSTALLER
    from .warmup import STATE
    from .watchdog import RUN_ID, WATCHDOG, read_run, report_dir

    run_id = os.environ.get(RUN_ID)
    ranks = read_run(report_dir(), run_id) if run_id else None
    return {
        "hooks": INSTALLER.describe(),
        "warmup": dict(STATE.result) or None,
        "watchdog": WATCHDOG.describe(),
        "ranks": ranks["ranks"] if ranks else {},
    }


def mode_of(settings) -> str:
    if not settings.enabled:
        return "off"
    return "strict" if settings.strict else "on"


def status_line(patcher, settings) -> str:
    parts = ", ".join(f"{name}={status}" for name, status in sorted(patcher.statuses.items()))
    policy = f"; {patcher.decision.line()}" if patcher.decision is not None else ""
    return (f"sglang-cp-symm: sglang {patcher.release or 'not installed'}, mode {mode_of(settings)}; "
            f"{parts or 'no targets'}{policy}; {hooks_line(settings)}")


def hooks_line(settings) -> str:
    from .hooks import INSTALLER

    states = INSTALLER.describe()
    warm = "off (SGLANG_CP_SYMM_WARMUP=0)" if not settings.warmup else (
        f"on, {settings.warmup_tokens} tokens" if settings.warmup_tokens else "on, longest prefill")
    watch = "off (SGLANG_CP_SYMM_WATCHDOG=0)" if not settings.watchdog else "on"
    problems = [f"{name} {state}" for name, state in sorted(states.items()) if state.startswith("skipped")]
    return f"warm-up {warm}; watchdog {watch}" + (f" ({'; '.join(problems)})" if problems else "")
