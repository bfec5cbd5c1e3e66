"""What the plugin does at a symmetric context, done where the CP all-gathers open theirs.

Every symmetric-memory allocation of sglang goes through one class,
``SymmetricMemoryContext``: the TP all-reduces (a few per layer), the
pre-allocation, the MoE groups, and the CP all-gathers. The plugin cares about the
CP all-gathers only, so it leaves that class alone and acts where those contexts
are opened: the modules of the register (``targets``) bind ``use_symmetric_memory``
as a global, and in those modules alone (``ContextTable.bind``) the name is
rebound to an *opener*, a function that calls sglang's own ``use_symmetric_memory``
and then looks at what it built. A context opened anywhere else is sglang's own,
with nothing added: no frame, no lookup (issue 23; the costs are in
docs/watchdog-cost.md).

The opener gives each context a role: the module's, where every function of the
module that opens a context has the same one (``module_role``, read again only when
the role table changes), else the one of the code object of the function that called
it (one frame lookup):

- ``GUARD`` (a CP or DCP all-gather on an NCCL whose symmetric kernels race, see
  ``race_guard``): the opener returns ``nullcontext()``, as sglang's own
  ``use_symmetric_memory`` does when symmetric memory is off, so the gather's
  buffers are allocated by the ordinary caching allocator, outside every window. A
  context is ``GUARD`` by its opener (the register's CP all-gathers) or, while the
  guard is engaged, by its group: ``guarded`` names the groups (sglang's
  ``GroupCoordinator.unique_name`` before the ``:``) whose contexts never route.
- ``WATCH`` (a CP all-gather of the register, or the send staging): the context is
  handed out in a one-element tuple wrapper whose ``__enter__``/``__exit__`` run
  sglang's and let the pool watchdog (``listener``) read its signal around them.
- no role (another function of a register module): sglang's context as it is.

Where the CP pool fix is on (0.5.9-0.5.11, ``pool``), the opener also re-points a
context of the CP group at that group's own pool (``router``); on 0.5.9-0.5.10 such a
context's class is switched to a subclass whose ``__enter__`` comes back to the CP pool
when the context is re-entered (``disable_/restore_symmetric_memory_context``).

Contexts of the guarded groups opened outside the register's modules are held by
hooks on the class itself (``hook_class``), put on only while the race guard is
engaged: the one case where the plugin adds to every symmetric context.

Every decision is taken from the opener's code and the context's group, the same on
every rank, so every rank opens, skips and routes the same contexts in the same
order. The plugin's own work never raises into the engine: a failure is reported
once and the context is left as sglang built it (sglang's own ``__enter__`` and
``__exit__`` always run, exactly when sglang's ``with`` asks for them, except for a
``GUARD`` context, which sglang's own answer for a disabled context replaces).
"""

from __future__ import annotations

import inspect
import sys
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional

from .logs import PluginLog

WATCH, GUARD = "watch", "guard"
#: The attribute that keeps a guarded context's role (the race guard's class hooks). Read and written with
#: getattr/setattr, never through ``self.__dict__``: since Python 3.11 an instance keeps its attributes inline until
#: something asks for ``__dict__`` (or switches its class), which then builds a dict for that instance and makes
#: every attribute access of sglang's own ``__enter__``/``__exit__`` on it take the slower path (on the H100, hooks
#: that did so added 1.7 us to a context they did not know, docs/watchdog-cost.md run 1).
ROLE = "_cp_symm_role"
#: Marks the plugin's functions and classes (openers, subclasses, wrappers, class hooks), so a second binding sees
#: the first.
MARK = "__sglang_cp_symm_hook__"


class RoleTable(dict):
    """Code object -> role, mirrored by the code object's ``id`` in ``ids`` for the openers' lookup.

    Why: a code object's hash is computed anew at each lookup from its name, constants and
    names (200-450 ns for sglang's ``GroupCoordinator.all_reduce`` on the CPU machine), and
    the opener looks one up at every context it opens. ``id`` is free; the table holds the
    code objects as its keys, so no id is reused while its entry lives. The mirror follows
    every way this module and ``race_guard`` change the table (set, delete, pop, clear).
    """

    def __init__(self) -> None:
        super().__init__()
        self.ids: Dict[int, str] = {}
        self.version = 0  # changes with every change of the table: the openers' module roles are read again then

    def __setitem__(self, code: Any, role: str) -> None:
        super().__setitem__(code, role)
        self.ids[id(code)] = role
        self.version += 1

    def __delitem__(self, code: Any) -> None:
        super().__delitem__(code)
        self.ids.pop(id(code), None)
        self.version += 1

    def pop(self, code: Any, *default: Any) -> Any:
        self.ids.pop(id(code), None)
        self.version += 1
        return super().pop(code, *default)

    def clear(self) -> None:
        super().clear()
        self.ids.clear()
        self.version += 1


class Listener:
    """What the watchdog provides: called around a ``WATCH`` context, never allowed to raise out."""

    def entered(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def leaving(self, frame: Any = None) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class ContextTable:
    """What the openers and the class hooks read, owned by the plugin object (``activation.Plugin``), one per process.

    - ``roles``: code object of a function that opens symmetric contexts -> its role (the watchdog and the guard
      fill it);
    - ``guarded``: group names whose every context is ``GUARD`` (empty unless the race guard is engaged);
    - ``confirm``: called once, at the first ``GUARD`` context, when the GPU is known; False lifts the guard
      (``race_guard``);
    - ``listener``: the watchdog, called around a ``WATCH`` context (None: the watchdog is off);
    - ``router``: the CP pool fix's ``pool.GroupPoolRouter`` (None where the fix is not on);
    - ``bound``: module -> [{name: sglang's function}, how many binders hold it];
    - ``hooked``: class -> [sglang's __enter__, sglang's __exit__, hook enter, hook exit];
    - ``context_types``: (context class, "reenter" or a listener) -> what an opener hands a context out as: the
      re-entering subclass, or the watched wrapper calling that listener (``context_type``);
    - ``log``: the plugin's records (``logs.PluginLog``), where a failure at a context is reported once.
    """

    __slots__ = ("roles", "guarded", "confirm", "listener", "router", "bound", "hooked", "context_types", "log")

    def __init__(self, log: Optional[PluginLog] = None) -> None:
        self.log = PluginLog() if log is None else log
        self.roles: RoleTable = RoleTable()
        self.guarded: set = set()
        self.confirm: Optional[Callable[[], bool]] = None
        self.listener: Optional[Listener] = None
        self.router: Any = None
        self.bound: Dict[Any, list] = {}
        self.hooked: Dict[type, list] = {}
        self.context_types: Dict[tuple, type] = {}

    def set_role(self, code: Any, role: str) -> None:
        """Give the contexts that ``code`` opens a role; ``GUARD`` wins over ``WATCH``."""
        if self.roles.get(code) != GUARD:
            self.roles[code] = role

    def clear_roles(self, role: str) -> None:
        for code in [c for c, r in self.roles.items() if r == role]:
            del self.roles[code]

    def confirm_guard(self) -> bool:
        """At the first ``GUARD`` context: whether the guard holds (the GPU is known by now); never raises."""
        check, self.confirm = self.confirm, None
        try:
            return True if check is None else bool(check())
        except Exception as exc:
            _failed(self.log, "guard check", exc)
            return True

    # -- the openers ---------------------------------------------------------------------------------------------
    def bind(self, module: Any, names: List[str]) -> Callable[[], None]:
        """Rebind ``names`` of ``module`` (each bound to sglang's ``use_symmetric_memory``) to openers; returns the
        undo. Several binders may hold one module (the patcher applying again while applied): the openers stay until
        the last lets go, and a name rebound by someone else since is left as it is."""
        entry = self.bound.get(module)
        if entry is None:
            originals = {name: module.__dict__[name] for name in names
                         if module.__dict__.get(name) is not None and not getattr(module.__dict__[name], MARK, False)}
            for name, value in originals.items():  # all checked before any is rebound
                if not same_signature(value):
                    raise TypeError(f"{module.__name__}.{name} is not called as "
                                    f"use_symmetric_memory(group_coordinator, disabled=False)")
            for name, value in originals.items():
                setattr(module, name, _opener(self, value, module, tuple(names)))
            entry = self.bound[module] = [originals, 0]
        entry[1] += 1
        done = False

        def unbind() -> None:
            nonlocal done
            if done:
                return
            done = True
            entry[1] -= 1
            if entry[1] <= 0:
                for name, original in entry[0].items():
                    if getattr(module.__dict__.get(name), "__wrapped__", None) is original:
                        setattr(module, name, original)
                self.bound.pop(module, None)

        return unbind

    def context_type(self, cls: type, kind: Any) -> type:
        """What a context of an opener is given (made once per class and kind): for ``"reenter"``, the subclass a
        routed 0.5.9-0.5.10 context is switched to; for a listener, the wrapper a watched context is handed out in,
        calling that listener."""
        key = (cls, kind)
        made = self.context_types.get(key)
        if made is None:
            made = self.context_types[key] = (_reentering(cls, self.log) if kind == "reenter"
                                              else _watched(kind, cls, self.log))
        return made

    # -- the class hooks of the race guard -----------------------------------------------------------------------
    def hook_class(self, cls: type) -> Callable[[], None]:
        """``GUARD`` for every context of a guarded group, wherever it is opened: hooks on ``cls`` itself, until the
        returned undo runs (the race guard puts them on only while it is engaged)."""
        entry = self.hooked.get(cls)
        if entry is None or not hooked(cls):
            entry = self.hooked[cls] = list(_hook_class(self, cls))

        def unhook() -> None:
            if self.hooked.get(cls) is not entry:
                return
            if cls.__dict__.get("__enter__") is entry[2]:
                cls.__enter__ = entry[0]
            if cls.__dict__.get("__exit__") is entry[3]:
                cls.__exit__ = entry[1]
            self.hooked.pop(cls, None)

        return unhook


def _failed(log: PluginLog, where: str, exc: BaseException) -> None:
    log.warning_once(f"context-hook-{where}", "sglang-cp-symm: the plugin's work at a symmetric context's %s "
                     "failed (%s: %s); that context ran as sglang's own, and the plugin goes on without it "
                     "(reported once)", where, type(exc).__name__, str(exc)[:200])


def same_signature(use: Callable) -> bool:
    """Whether ``use`` takes what sglang's ``use_symmetric_memory`` takes on every release 0.5.6-0.5.23
    (``group_coordinator, disabled=False``), the signature the opener is written with (no ``*args`` to pack)."""
    try:
        params = list(inspect.signature(use).parameters.values())
    except (TypeError, ValueError):
        return False
    kinds = [p.kind for p in params]
    return ([p.name for p in params] == ["group_coordinator", "disabled"] and params[1].default is False
            and all(k == inspect.Parameter.POSITIONAL_OR_KEYWORD for k in kinds))


def group_role(context: Any, guarded: Any) -> Optional[str]:
    """``GUARD`` if the context's group is one of ``guarded`` (its ``group_coordinator``, every release)."""
    name = getattr(getattr(context, "group_coordinator", None), "unique_name", None)
    return GUARD if isinstance(name, str) and name.split(":", 1)[0] in guarded else None


#: A module role that no single role describes: its contexts are told apart by their opener's code object.
MIXED = "mixed"


def openers_in(module: Any, names: tuple) -> set:
    """The code objects of ``module`` that name one of ``names`` (its functions, its classes' methods, and the
    functions nested in them): the only code that reaches the module's binding of ``use_symmetric_memory`` (a
    global is read through the globals of the function's own module)."""
    found: set = set()
    stack = []
    for value in list(vars(module).values()):
        functions = [value] if inspect.isfunction(value) else (
            [v for v in vars(value).values() if inspect.isfunction(getattr(v, "__func__", v))]
            if isinstance(value, type) and value.__module__ == module.__name__ else [])
        for fn in functions:
            fn = getattr(fn, "__func__", fn)
            if getattr(fn, "__globals__", None) is module.__dict__:
                stack.append(fn.__code__)
    while stack:  # code objects nest as a tree: each is reached once
        code = stack.pop()
        if any(name in code.co_names for name in names):
            found.add(code)
        stack.extend(c for c in code.co_consts if inspect.iscode(c))
    return found


def module_role(roles: RoleTable, openers: set) -> Optional[str]:
    """The role every opener of a module has (None: none has one), or ``MIXED``."""
    found = {roles.get(code) for code in openers}
    return found.pop() if len(found) == 1 else (None if not found else MIXED)


def _opener(table: ContextTable, use: Callable, module: Any, names: tuple) -> Callable:
    """sglang's ``use_symmetric_memory`` (``use``) as the register's module ``module`` sees it once the plugin is on.

    Written for the hot path (a CP all-gather's context, at every layer of every forward). The role is the
    module's where every function of the module that opens a context has the same one (``module_role``, read
    again whenever the role table changes): no frame is looked up then. Otherwise the caller's code object is
    looked up (one frame lookup and one dict lookup). A watched context is handed out in a small wrapper whose
    ``__enter__``/``__exit__`` run sglang's and let the watchdog read its signal around them (switching the
    context's own class would make every attribute access of sglang's methods on it slower, see ``ROLE``)."""
    roles, getframe, guarded, wrappers = table.roles, sys._getframe, table.guarded, table.context_types
    ids = roles.ids
    known = [-1, None]  # [the role table's version, the module's role then]: the opener's own cache

    def use_symmetric_memory(group_coordinator: Any, disabled: bool = False) -> Any:
        context = use(group_coordinator, disabled)
        if context.__class__ is nullcontext:  # symmetric memory is off for this allocation: sglang's answer
            return context
        try:
            if known[0] != roles.version:
                known[:] = roles.version, module_role(roles, openers_in(module, names))
            role = known[1]
            if role is MIXED:
                role = ids.get(id(getframe(1).f_code))
            if role is GUARD or (guarded and group_role(context, guarded) is GUARD):
                if table.confirm is None or table.confirm_guard():
                    return nullcontext()  # nothing routed into the pool: the buffers stay outside every window
                known[:] = roles.version, module_role(roles, openers_in(module, names))  # the guard was lifted
                role = known[1] if known[1] is not MIXED else ids.get(id(getframe(1).f_code))
            router = table.router
            if router is not None and router.route(context) and router.reenters:
                cls = context.__class__
                context.__class__ = wrappers.get((cls, "reenter")) or table.context_type(cls, "reenter")
            listener = table.listener
            if role is WATCH and listener is not None and not getattr(context, "is_graph_capture", 0):
                cls = context.__class__
                return (wrappers.get((cls, listener)) or table.context_type(cls, listener))((context,))
        except Exception as exc:
            _failed(table.log, "opening", exc)
        return context

    use_symmetric_memory.__wrapped__ = use  # type: ignore[attr-defined]
    setattr(use_symmetric_memory, MARK, True)
    return use_symmetric_memory


def _reentering(cls: type, log: PluginLog) -> type:
    """``cls`` whose ``__enter__`` first comes back to the CP pool (0.5.9-0.5.10 rebuild the pool context on
    re-entry, after ``disable_/restore_symmetric_memory_context``): the class a routed context is switched to."""
    enter = _callable(cls, "__enter__")
    from .pool import reenter_group_pool

    def __enter__(self):
        try:
            reenter_group_pool(self)
        except Exception as exc:  # sglang's own re-entry then rebuilds the context on its shared pool
            log.warning_once("pool-reenter", "sglang-cp-symm: a CP context re-entered sglang's shared pool: "
                             "%s: %s (reported once)", type(exc).__name__, str(exc)[:200])
        return enter(self)

    return type(cls.__name__, (cls,), {"__enter__": __enter__, "__slots__": (), "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__, MARK: True})


def _watched(listener: Listener, cls: type, log: PluginLog) -> type:
    """A wrapper of a context of ``cls`` that ``listener`` (the watchdog) reads its signal around.

    A one-element tuple: built in C (no ``__init__`` frame), the context at ``[0]``; the listener's two methods
    are bound once, here. Whether ``entered`` ran for a context is the watchdog's own business (``leaving`` does
    nothing on a thread where no watched context was entered), so the wrapper keeps no state of its own."""
    enter, leave = _callable(cls, "__enter__"), _callable(cls, "__exit__")
    entered, leaving = listener.entered, listener.leaving

    class WatchedContext(tuple):
        __slots__ = ()

        def __enter__(self):
            result = enter(self[0])  # sglang's own: routing into the pool is on from here, as on every other rank
            try:
                entered()
            except Exception as exc:
                _failed(log, "entry", exc)
            return result

        def __exit__(self, exc_type, exc_val, exc_tb):
            try:
                leaving()  # the listener finds the gather's frame itself, only when it must
            except Exception as exc:
                _failed(log, "exit", exc)
            return leave(self[0], exc_type, exc_val, exc_tb)  # sglang's own: routing ends here, always

        def __getattr__(self, name: str) -> Any:  # anything else is the context's own
            return getattr(self[0], name)

    WatchedContext.__qualname__ = f"WatchedContext[{cls.__qualname__}]"
    setattr(WatchedContext, MARK, True)
    return WatchedContext


def _hook_class(table: ContextTable, cls: type) -> tuple:
    """Put the race guard's hooks on ``cls``; returns (sglang's __enter__, sglang's __exit__, hook enter, hook exit)."""
    enter, leave = _callable(cls, "__enter__"), _callable(cls, "__exit__")
    original_enter, original_exit = cls.__dict__["__enter__"], cls.__dict__["__exit__"]
    guarded = table.guarded

    def __enter__(self):
        try:
            guard = bool(guarded) and group_role(self, guarded) is GUARD
            if guard and (table.confirm is None or table.confirm_guard()):
                setattr(self, ROLE, GUARD)
                return self  # nothing routed into the pool: the group's buffers stay outside every window
        except Exception as exc:
            _failed(table.log, "entry", exc)
        return enter(self)

    def __exit__(self, exc_type, exc_val, exc_tb):
        if getattr(self, ROLE, None) is GUARD:
            return False
        return leave(self, exc_type, exc_val, exc_tb)

    for hook, original in ((__enter__, original_enter), (__exit__, original_exit)):
        hook.__wrapped__ = original  # type: ignore[attr-defined]
        hook.__qualname__ = f"{cls.__qualname__}.{hook.__name__}"
        setattr(hook, MARK, True)
    cls.__enter__, cls.__exit__ = __enter__, __exit__
    return original_enter, original_exit, __enter__, __exit__


def _callable(cls: type, name: str) -> Callable:
    """The method as a plain call ``f(self, ...)``: a function as it is; anything else on the class bound to each
    instance, as attribute access would bind it."""
    value = getattr(cls, name)
    if inspect.isfunction(value):
        return value
    return lambda self, *args: value.__get__(self, type(self))(*args)


def hooked(cls: Any) -> bool:
    """Whether the race guard's hooks are on ``cls``."""
    return getattr(cls.__dict__.get("__enter__"), MARK, False)
