"""The entry point sglang calls (group ``sglang.srt.plugins``) in every process that loads plugins.

sglang loads every installed plugin unless ``SGLANG_PLUGINS`` filters it out, so
this function must do nothing at all unless ``SGLANG_CP_SYMM`` turns the plugin
on, and must be cheap: it runs in the main process, each scheduler and, from
0.5.22, the detokenizer and DP controller.
"""

from __future__ import annotations

import logging

from .patching import PATCHER, StrictModeError
from .report import ensure_visible, status_line
from .settings import read_settings
from .versions import installed_sglang

logger = logging.getLogger("sglang_cp_symm")


def activate() -> bool:
    """Apply the register to this process if the environment asks for it. Returns True when on.

    sglang's ``load_plugins()`` logs and swallows exceptions from plugins, so strict
    mode stops the process with ``SystemExit`` instead: the operator asked for a
    refusal to start, not for a log line.
    """
    settings = read_settings()
    if settings.problems:
        ensure_visible()
        for problem in settings.problems:
            logger.warning("sglang-cp-symm: %s", problem)
        if settings.strict:
            raise SystemExit(f"sglang-cp-symm strict mode: {settings.problems[0]}")
    if not settings.enabled:
        return False
    ensure_visible()
    try:
        PATCHER.apply(settings, installed_sglang())
    except StrictModeError as exc:
        raise SystemExit(f"sglang-cp-symm strict mode: {exc}") from None
    except Exception:  # never take the engine down unasked
        logger.exception("sglang-cp-symm: could not apply its patches; sglang runs unchanged")
        return False
    logger.info(status_line(PATCHER, settings))
    return True


def register() -> None:
    """Entry point for ``sglang.srt.plugins`` (sglang 0.5.11 and later)."""
    activate()
