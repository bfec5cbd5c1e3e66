"""What the plugin does when a ``SymmetricMemoryContext`` is entered and left, by the code that opened it.

Every symmetric-memory allocation of sglang goes through this one class: the TP
all-reduces (a few per layer), the pre-allocation, and the CP all-gathers. The
plugin cares about the CP all-gathers only, so the class's ``__enter__`` and
``__exit__`` are replaced by two plain functions that look up, once per context,
the code object of the frame running the ``with`` statement:

- not one of the plugin's (``PLAIN``): the original method runs, and that is all
  (one frame lookup, two dict lookups: ``bench/overhead.py`` measures it);
- ``WATCH`` (a CP all-gather of the register, or the send staging): the original
  method runs, and the pool watchdog measures around it;
- ``GUARD`` (a CP or DCP all-gather on an NCCL whose symmetric kernels race, see
  ``race_guard``): the original methods do not run at all, so the gather's buffers
  are allocated by the ordinary caching allocator, outside every window. A context
  is ``GUARD`` by its opener (the register's CP all-gathers) or, while the guard is
  engaged, by its group: the table's ``guarded`` names the groups (sglang's
  ``GroupCoordinator.unique_name`` before the ``:``) whose contexts never route.

The role of a known context is kept on it (``ROLE``), so a context left and re-entered
elsewhere (``disable_/restore_symmetric_memory_context``, 0.5.6+) keeps the role it
was opened with. The plugin's own work never raises out of these methods: a
failure is reported once (per side, per process) and the context behaves as
sglang's own: entered exactly when sglang enters it, left exactly when sglang
leaves it. So no rank is left routing its allocations into the pool after the
``with`` (sglang's ``__exit__`` always runs), and none skips the routing inside it
while the other ranks route (``__enter__`` always runs sglang's, except for a
``GUARD`` context, whose role comes from the register and is the same on every rank).
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable, Dict, Optional

from . import logs

PLAIN, WATCH, GUARD = "plain", "watch", "guard"
#: The role of a ``WATCH`` context between the watchdog's reading at its entry and the one at its exit: the
#: role attribute doubles as the "measured" flag, so leaving reads one attribute and writes one (back to ``WATCH``).
MEASURING = "watch, measured on entry"
#: The attribute that keeps a known context's role. The hooks read and write it with getattr/setattr, never
#: through ``self.__dict__``: since Python 3.11 an instance keeps its attributes inline until something asks for
#: ``__dict__``, which then builds a dict for that instance and makes every attribute access of sglang's own
#: ``__enter__``/``__exit__`` on it take the slower path (a stand-in context on the CPU machine: 0.35 -> 0.52 us;
#: on the H100 the hooks that did so added 1.7 us to a context they do not know, docs/watchdog-cost.md).
ROLE = "_cp_symm_role"


class RoleTable(dict):
    """Code object -> role, mirrored by the code object's ``id`` in ``ids`` for the hooks' lookup.

    Why: a code object's hash is computed anew at each lookup from its name, constants and
    names (200-450 ns for sglang's ``GroupCoordinator.all_reduce`` on the CPU machine), and
    the hooks look one up at every symmetric context. ``id`` is free; the table holds the
    code objects as its keys, so no id is reused while its entry lives. The mirror follows
    every way this module and ``race_guard`` change the table (set, delete, pop, clear).
    """

    def __init__(self) -> None:
        super().__init__()
        self.ids: Dict[int, str] = {}

    def __setitem__(self, code: Any, role: str) -> None:
        super().__setitem__(code, role)
        self.ids[id(code)] = role

    def __delitem__(self, code: Any) -> None:
        super().__delitem__(code)
        self.ids.pop(id(code), None)

    def pop(self, code: Any, *default: Any) -> Any:
        self.ids.pop(id(code), None)
        return super().pop(code, *default)

    def clear(self) -> None:
        super().clear()
        self.ids.clear()

    def update(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - not used, kept consistent
        for code, role in dict(*args, **kwargs).items():
            self[code] = role


class Listener:
    """What the watchdog provides: called around a ``WATCH`` context, never allowed to raise out."""

    def entered(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def leaving(self, frame: Any = None) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class ContextTable:
    """The context hooks' state, owned by the plugin object (``activation.Plugin``), one per process.

    Why one table shared by the watchdog and the race guard: both act on the same two methods of
    the same class, so the hooks are put on once, whoever asks first, and taken off when the last
    one lets go (``install`` counts them). The hooks bind the table's parts to locals when they are
    put on the class (``_replace``): no lookup through the plugin's holder per context.

    - ``roles``: code object of a function that opens symmetric contexts -> its role (the watchdog
      and the guard fill it);
    - ``guarded``: group names whose every context is ``GUARD`` (empty unless the race guard is engaged);
    - ``confirm``: called once, at the first ``GUARD`` context, when the GPU is known; False lifts the
      guard (``race_guard``);
    - ``listener``: the watchdog, called around a ``WATCH`` context;
    - ``installed``: class -> [sglang's __enter__, sglang's __exit__, how many installers hold the hooks,
      hook enter, hook exit].
    """

    __slots__ = ("roles", "guarded", "confirm", "listener", "installed")

    def __init__(self) -> None:
        self.roles: RoleTable = RoleTable()
        self.guarded: set = set()
        self.confirm: Optional[Callable[[], bool]] = None
        self.listener: Optional[Listener] = None
        self.installed: Dict[type, list] = {}

    def set_role(self, code: Any, role: str) -> None:
        """Give the contexts that ``code`` opens a role; ``GUARD`` wins over ``WATCH``."""
        if self.roles.get(code) != GUARD:
            self.roles[code] = role

    def clear_roles(self, role: str) -> None:
        for code in [c for c, r in self.roles.items() if r == role]:
            del self.roles[code]

    def install(self, cls: type, listener: Optional[Listener] = None) -> Callable[[], None]:
        """Replace ``cls.__enter__``/``__exit__`` (once, whoever asks: the watchdog and the race guard share them);
        returns the function that takes this installer's part back, and sglang's methods once no installer is
        left."""
        if listener is not None:
            self.listener = listener
        entry = self.installed.get(cls)
        if entry is None or not installed(cls):
            original_enter, original_exit, hooked_enter, hooked_exit = _replace(cls, self)
            entry = self.installed[cls] = [original_enter, original_exit, 0, hooked_enter, hooked_exit]
        entry[2] += 1
        done = False

        def restore() -> None:
            nonlocal done
            if done:
                return
            done = True
            if listener is not None and self.listener is listener:
                self.listener = None
            entry[2] -= 1
            if entry[2] <= 0:
                hooked_enter, hooked_exit = entry[3], entry[4]
                if cls.__dict__.get("__enter__") is hooked_enter:
                    cls.__enter__ = entry[0]
                if cls.__dict__.get("__exit__") is hooked_exit:
                    cls.__exit__ = entry[1]
                self.installed.pop(cls, None)

        return restore

    def confirm_guard(self) -> bool:
        """At the first ``GUARD`` context: whether the guard holds (the GPU is known by now); never raises."""
        check, self.confirm = self.confirm, None
        try:
            return True if check is None else bool(check())
        except Exception as exc:
            _failed("guard check", exc)
            return True


def _failed(where: str, exc: BaseException) -> None:
    logs.warning_once(f"context-hook-{where}", "sglang-cp-symm: the plugin's work at a symmetric context's %s "
                      "failed (%s: %s); that context ran as sglang's own, and the plugin goes on without it "
                      "(reported once)", where, type(exc).__name__, str(exc)[:200])


def group_role(context: Any, guarded: Any) -> Optional[str]:
    """``GUARD`` if the context's group is one of ``guarded`` (its ``group_coordinator``, every release)."""
    name = getattr(getattr(context, "group_coordinator", None), "unique_name", None)
    return GUARD if isinstance(name, str) and name.split(":", 1)[0] in guarded else None


def _replace(cls: type, table: ContextTable) -> tuple:
    """Put the two hooks on ``cls``; returns (sglang's __enter__, sglang's __exit__, hook enter, hook exit)."""
    enter, leave = _callable(cls, "__enter__"), _callable(cls, "__exit__")
    original_enter, original_exit = cls.__dict__["__enter__"], cls.__dict__["__exit__"]
    roles, getframe, guarded = table.roles.ids, sys._getframe, table.guarded  # roles: by the code object's id

    def __enter__(self):
        try:  # the plugin's part: which role this context has (a failure makes it a context of sglang's own)
            role = getattr(self, ROLE, None)  # never self.__dict__: see ROLE
            code = None
            if role is None:
                code = getframe(1).f_code
                role = roles.get(id(code))
                if role is None and guarded:
                    role = group_role(self, guarded)
                if role is GUARD and table.confirm is not None and not table.confirm_guard():
                    role = roles.get(id(code))  # the guard was lifted: the role without it
                if role is not None:
                    setattr(self, ROLE, role)
        except Exception as exc:
            _failed("entry", exc)
            role = None
        if role is None:  # the fast path: a context the plugin does not know (nothing is stored on it)
            return enter(self)
        if role is GUARD:
            return self  # nothing routed into the pool: the gather's buffers stay outside every window
        result = enter(self)  # sglang's own: routing into the pool is on from here, as on every other rank
        try:
            watcher = table.listener
            if watcher is not None and not getattr(self, "is_graph_capture", False):
                watcher.entered()
                setattr(self, ROLE, MEASURING)
        except Exception as exc:
            _failed("entry", exc)
        return result

    def __exit__(self, exc_type, exc_val, exc_tb):
        try:
            role = getattr(self, ROLE, None)
        except Exception as exc:  # pragma: no cover - an instance dict does not fail
            _failed("exit", exc)
            role = None
        if role is None:  # the fast path
            return leave(self, exc_type, exc_val, exc_tb)
        if role is GUARD:
            return False
        if role is MEASURING:
            try:
                setattr(self, ROLE, WATCH)
                watcher = table.listener
                if watcher is not None:
                    watcher.leaving()  # the listener finds the gather's frame itself, only when it must
            except Exception as exc:
                _failed("exit", exc)
        return leave(self, exc_type, exc_val, exc_tb)  # sglang's own: routing ends here, whatever failed above

    for hook, original in ((__enter__, original_enter), (__exit__, original_exit)):
        hook.__wrapped__ = original  # type: ignore[attr-defined]
        hook.__qualname__ = f"{cls.__qualname__}.{hook.__name__}"
        hook.__sglang_cp_symm_hook__ = True  # type: ignore[attr-defined]
    cls.__enter__, cls.__exit__ = __enter__, __exit__
    return original_enter, original_exit, __enter__, __exit__


def _callable(cls: type, name: str) -> Callable:
    """The method as a plain call ``f(self, ...)``: a function as it is; a wrapper already on the class (the
    0.5.6-0.5.10 pool fix wraps ``__enter__``) bound to each instance, as attribute access would bind it."""
    value = cls.__dict__[name]
    if inspect.isfunction(value):
        return value
    return lambda self, *args: value.__get__(self, type(self))(*args)


def installed(cls: Any) -> bool:
    return getattr(cls.__dict__.get("__enter__"), "__sglang_cp_symm_hook__", False)
