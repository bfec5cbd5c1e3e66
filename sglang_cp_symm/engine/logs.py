"""The plugin's logger: a child of sglang's, so sglang's format, level and log files apply.

Records propagate to the handlers sglang configures (``configure_logger`` calls
``logging.basicConfig(force=True)`` or ``logging.config.dictConfig``). The plugin
adds no handler of its own and changes no level.

One case needs care: sglang's scheduler processes load plugins before they
configure logging, when the root logger has no handler and Python drops INFO
records. The plugin's INFO records of that moment (the start-up status line) are
held back and handed to sglang's handlers as soon as sglang configures logging;
WARNING and above go out at once, through Python's last-resort handler, so a
problem is never held back. A process that never configures logging (a script
that only patches) loses nothing it would have shown.
"""

from __future__ import annotations

import logging
import logging.config
import threading
from typing import Any, Callable, List

LOGGER_NAME = "sglang.cp_symm"
logger = logging.getLogger(LOGGER_NAME)


def _configured() -> bool:
    """True once some handler would receive this logger's records (sglang or the user configured logging)."""
    node: Any = logger
    while node is not None:
        if node.handlers:
            return True
        if not node.propagate:
            return False
        node = node.parent
    return False


#: Set on a ``basicConfig``/``dictConfig`` wrapper of a ``PluginLog`` once it has released its records.
RELEASED = "__sglang_cp_symm_released__"


def _unwrap_released(owner: Any, name: str, wrapper: Callable) -> None:
    """Mark ``wrapper`` released and, where it is the one installed, put back what it wrapped, past any other
    released wrapper under it (two logs in one process, as tests make: the inner one releases first)."""
    setattr(wrapper, RELEASED, True)
    if getattr(owner, name) is not wrapper:
        return
    value = wrapper.__wrapped__
    while getattr(value, RELEASED, False):
        value = value.__wrapped__
    setattr(owner, name, value)


class PluginLog:
    """The plugin's records of one process: those held until logging is configured, and the warnings already said.

    Owned by the plugin object (``activation.Plugin.log``) and handed to the parts that report (the patcher, the
    race guard and the context openers, through ``context_hooks.ContextTable.log``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: List[logging.LogRecord] = []
        self._restore: List[Callable[[], None]] = []
        self._said_once: set = set()

    def info(self, message: str, *args: Any) -> None:
        """An INFO record; held until logging is configured when it is not yet (see the module docstring)."""
        if _configured():
            logger.info(message, *args)
            return
        record = logger.makeRecord(logger.name, logging.INFO, "(sglang-cp-symm)", 0, message, args, None)
        with self._lock:
            self._held.append(record)
            if not self._restore:
                self._watch_configuration()

    def warning_once(self, key: str, message: str, *args: Any) -> None:
        """One WARNING for ``key`` (a bad switch, a missing library): never repeated, never held."""
        with self._lock:
            if key in self._said_once:
                return
            self._said_once.add(key)
        logger.warning(message, *args)

    def _release_held(self) -> None:
        with self._lock:
            held, self._held[:] = list(self._held), []
            for undo in self._restore:
                undo()
            self._restore.clear()
        for record in held:
            if logger.isEnabledFor(record.levelno):  # sglang's level decides, as for any record
                logger.handle(record)

    def _watch_configuration(self) -> None:
        """Release the held records right after sglang configures logging (either way it does it)."""
        for owner, name in ((logging, "basicConfig"), (logging.config, "dictConfig")):
            original = getattr(owner, name)

            def configured(*args: Any, __original=original, **kwargs: Any) -> Any:
                result = __original(*args, **kwargs)
                self._release_held()
                return result

            configured.__wrapped__ = original  # type: ignore[attr-defined]
            setattr(owner, name, configured)
            self._restore.append(lambda o=owner, n=name, w=configured: _unwrap_released(o, n, w))
