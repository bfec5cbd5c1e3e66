"""The entry point sglang calls (group ``sglang.srt.plugins``) in every process that loads plugins.

sglang loads every installed plugin unless ``SGLANG_PLUGINS`` filters it out, so
this function must do nothing at all unless ``SGLANG_CP_SYMM`` turns the plugin
on, and must be cheap: it runs in the main process, each scheduler and, from
0.5.22, the detokenizer and DP controller. Off, it reads the switches and returns;
nothing else of the plugin is imported.

Strict mode stops the engine here, at its start, with one line and exit status 1:
``load_plugins()`` logs and swallows ordinary exceptions from plugins, but not
``SystemExit``. Only processes that load sglang's plugins (or, on releases without
the framework, import a module the plugin patches) ever reach this.
"""

from __future__ import annotations

from . import logs
from .settings import StrictModeError, read_settings, strict_exit


def activate() -> bool:
    """Apply the plugin to this process if the environment asks for it. Returns True when on.

    Never raises, except ``SystemExit`` in strict mode.
    """
    settings = read_settings()
    if settings.problems and settings.strict:  # the exit line names the problem: no warning before it
        raise strict_exit(settings.problems[0])
    if not settings.enabled:  # nothing of the engine side is imported: each activation says its problems itself
        for problem in settings.problems:
            logs.logger.warning("sglang-cp-symm: %s", problem)
        return False
    try:  # wrapt and the engine side load only now, and only when the plugin is on
        from . import activation
    except Exception as exc:  # a partial install (wrapt missing or broken): one line, and sglang as it is
        cause = f"{type(exc).__name__}: {str(exc)[:200]}"
        for problem in settings.problems:
            logs.logger.warning("sglang-cp-symm: %s", problem)
        logs.logger.warning("sglang-cp-symm: cannot load (%s); nothing was changed. Reinstall it: "
                            "pip install --force-reinstall sglang-cp-symm", cause)
        if settings.strict:
            raise strict_exit(f"cannot load: {cause}") from None
        return False
    log = None
    try:
        log = activation.plugin().log  # the process's: a second activation (bootstrap, then a command) is quiet
        for problem in settings.problems:
            log.warning_once(problem, "sglang-cp-symm: %s", problem)
        activation.apply(settings)
    except StrictModeError as exc:
        raise strict_exit(str(exc)) from None
    except Exception as exc:  # never take the engine down unasked; undo what was done, and say so truthfully
        cause = f"{type(exc).__name__}: {str(exc)[:200]}"
        try:
            activation.unapply()
            outcome = "nothing was changed"
        except Exception:
            outcome = "part of it may be applied, see sglang_cp_symm.status()"
        if log is not None:
            log.warning_once("activation", "sglang-cp-symm: could not apply (%s); %s", cause, outcome)
        else:  # the plugin object itself could not be made
            logs.logger.warning("sglang-cp-symm: could not apply (%s); %s", cause, outcome)
        if settings.strict:
            raise strict_exit(f"could not apply: {cause}") from None
        return False
    return True


def register() -> None:
    """Entry point for ``sglang.srt.plugins`` (sglang 0.5.11 and later)."""
    activate()
