"""Apply the register to the running process, and take it back.

Each target is patched by a wrapt post-import hook on its module, so it does not
matter whether sglang imported the module before or after the plugin loaded:
the hook fires at once for a module already imported, otherwise right after the
module's body runs and before any importer binds a name from it. Copies that
other modules bound earlier with ``from module import fn`` are rebound too.

The function installed in the original's place is a copy in which one statement,
the output allocation, sits inside sglang's own ``use_symmetric_memory`` (see
``rewrite`` for the safety rule, ``rebuild`` for what stays the original's). Before
anything changes, every step that can refuse has run (``plan_target``): the
attribute is the register's own function (not an alias or a wrapper applied by
assignment), its source is the code in memory, the rewrite proves its rule, and
every name the inserted code reads resolves in the module (sglang's own object, or
injected from where sglang defines it). Then the change is made as one step that is
rolled back whole if any part of it fails.

``unpatch()`` restores every attribute and copy it changed; applying twice is the
same as applying once. No exception from any step reaches the engine's import:
the module imports unpatched and the target reads ``skipped: <why>``; only strict
mode stops the engine (``settings.strict_exit``).
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import wrapt

from . import pool as group_pool
from .context_hooks import ContextTable
from .logs import logger
from .nccl_policy import Decision, NcclVersion
from .plan import Action, Plan as ProcessPlan, State, TargetPlan, gather_facts, make_plan, state_words
from .race_guard import RaceGuard, report_once
from .rebuild import RebuildError, prove_source, rebuilt_function
from .rewrite import (
    INJECTABLE,
    AlreadyStaged,
    ShapeMismatch,
    find_send_edit,
    injected_names,
    output_state,
    rewrite_function_source,
)
from .settings import Settings, StrictModeError, strict_exit
from .watchdog import PoolWatchdog
from .source_facts import PATCHED_POOL_MARK, UPSTREAM_POOL_MARK
from ..releases import Build, Release
from ..targets import POOL_FIX, SYMMETRIC_CONTEXT_MODULE, SYMMETRIC_CONTEXT_NAME, Target, is_supported, targets_for


PATCHED, UPSTREAM, ABSENT, SKIPPED, WAITING, HELD, GUARDED = (
    State.PATCHED, State.UPSTREAM, State.ABSENT, State.SKIPPED, State.WAITING, State.HELD, State.GUARDED)
#: the status entry of the race guard itself (``race_guard``): its groups, its reason
GUARD_ENTRY = "race_guard"
#: The attribute set on each function the patcher installs in place of an engine function.
REWRITTEN_MARK = "__sglang_cp_symm_rewritten__"


def resolve(owner: Any, dotted: str) -> Tuple[Any, str, Any]:
    """(object holding the attribute, attribute name, current value) for ``Class.method`` or ``fn`` of an engine
    module; the hooks (``hooks``) find their attributes the same way.

    A class attribute is read from the class ``__dict__`` so that a staticmethod or
    classmethod comes back as itself, not as the function it binds.
    """
    *parents, attr = dotted.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, attr, owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)


@dataclass
class TargetStatus:
    """What happened to one target in this process; ``planned`` is the plan's entry it executed."""

    name: str
    where: str
    state: State
    detail: str = ""
    planned: Optional[TargetPlan] = None

    def __str__(self) -> str:
        return state_words(self.state, self.detail)


class Refused(Exception):
    """A target that is not patched, with the state and the reason to report."""

    def __init__(self, state: State, detail: str = "") -> None:
        super().__init__(detail)
        self.state, self.detail = state, detail


@dataclass
class Plan:
    """What patching one target will do, every check already passed; nothing has changed yet."""

    target: Target
    owner: Any
    attr: str
    current: Any  # the attribute as found (the original, or the plugin's earlier copy)
    original: Callable
    source: str  # the original's source, dedented
    first_line: int
    output: bool
    send: bool
    context_names: frozenset
    inject: Dict[str, Any] = field(default_factory=dict)  # names to add to the module, and their values
    notes: List[str] = field(default_factory=list)  # parts left out, and why


def is_rewritten(value: Any) -> bool:
    """True for a function the plugin installed in place of an engine function."""
    return bool(getattr(value, REWRITTEN_MARK, False))


def symmetric_context_names(module: Any) -> frozenset:
    """``use_symmetric_memory`` and every global of ``module`` bound to sglang's very function (an alias)."""
    names = {SYMMETRIC_CONTEXT_NAME}
    home = sys.modules.get(SYMMETRIC_CONTEXT_MODULE)
    real = getattr(home, SYMMETRIC_CONTEXT_NAME, None)
    if real is not None:  # sglang's function, or the plugin's opener of it (``context_hooks``)
        names |= {n for n, v in vars(module).items() if v is real or getattr(v, "__wrapped__", None) is real}
    return frozenset(names)


def _sglang_object(name: str) -> Any:
    """The object the inserted code means by ``name``: sglang's (or the plugin's) own, imported from its home."""
    if name == "torch":
        return importlib.import_module("torch")
    return getattr(importlib.import_module(INJECTABLE[name]), name)


def resolve_names(plan_names: Dict[str, str], module: Any) -> Tuple[Dict[str, Any], List[str]]:
    """Where each name the inserted code reads (``plan_names``: name -> "local" or not) resolves in ``module``:
    ({name: sglang's object, to inject where the module does not bind it}, ["name (why it cannot resolve)"]).

    A name the module binds must be the very object the inserted code means (sglang's, or the plugin's own
    ``INJECTABLE``); an unbound one is injected from its home, or is a builtin."""
    inject: Dict[str, Any] = {}
    missing: List[str] = []
    for name, kind in sorted(plan_names.items()):
        if kind == "local":
            continue
        expected = None
        if name in INJECTABLE or name == "torch":
            try:
                expected = _sglang_object(name)
            except Exception as exc:
                missing.append(f"{name} ({INJECTABLE.get(name, name)} cannot be imported ({type(exc).__name__}))")
                continue
        if name in module.__dict__:
            value = module.__dict__[name]
            if expected is not None and value is not expected and getattr(value, "__wrapped__", None) is not expected:
                missing.append(f"{name} ({module.__name__}.{name} is not "
                               f"{INJECTABLE.get(name, 'the torch module')}'s object)")
        elif expected is not None and name != "torch":
            inject[name] = expected
        elif not hasattr(builtins, name):
            missing.append(f"{name} ({module.__name__} does not define it)")
    return inject, missing


def plan_target(target: Target, module: Any, output: bool, send: bool,
                compiled: Optional[Dict[tuple, Any]] = None) -> Plan:
    """Every check patching makes before it changes anything; raises ``Refused`` with the state to report.
    ``compiled``: the module compiles the source proof may reuse (``rebuild.build_code``)."""
    try:
        owner, attr, current = resolve(module, target.function)
    except (AttributeError, KeyError):
        raise Refused(ABSENT) from None
    original = current.__wrapped__ if is_rewritten(current) else current
    if not inspect.isfunction(original):
        raise Refused(SKIPPED, f"not a plain function ({type(original).__name__})")
    if getattr(original, "__wrapped__", None) is not None:
        raise Refused(SKIPPED, f"{target.function} is a wrapper around another function (applied by assignment or "
                      "a decorator); rewriting the inner one would drop the wrapper")
    if original.__qualname__ != target.function:
        raise Refused(SKIPPED, f"{target.function} is bound to {original.__module__}.{original.__qualname__}, not to "
                      "the function the register names (an alias or a wrapper)")
    if original.__globals__ is not module.__dict__:
        raise Refused(SKIPPED, f"{target.function} is defined in {original.__module__}, not in {module.__name__}")
    if original.__code__.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        raise Refused(SKIPPED, "generators and coroutines are not rewritten")
    try:
        lines, first_line = inspect.getsourcelines(original)
    except (OSError, TypeError) as exc:
        raise Refused(SKIPPED, f"its source is not available ({exc})") from None
    source = textwrap.dedent("".join(lines))
    try:
        prove_source(original, source, first_line, compiled)
    except (RebuildError, SyntaxError) as exc:
        raise Refused(SKIPPED, str(exc)) from None
    names = symmetric_context_names(module)
    plan = Plan(target, owner, attr, current, original, source, first_line, output, send, names)
    try:
        if output and output_state(source, target, names)[0] == "in context":
            plan.output = False
            plan.notes.append("the function already opens the context")
        if send:
            try:
                find_send_edit(source, target, names)
            except AlreadyStaged as exc:
                plan.send = False
                plan.notes.append(str(exc))
        if not (plan.output or plan.send):
            raise Refused(UPSTREAM, "; ".join(plan.notes) or target.fixed_by)
        needed = injected_names(source, target, plan.output, plan.send, names)
    except ShapeMismatch as exc:
        raise Refused(SKIPPED, str(exc)) from None
    plan.inject, missing = resolve_names(needed, module)
    if missing:
        raise Refused(SKIPPED, "the inserted code needs " + ", ".join(missing))
    return plan


def compile_rewritten(original: Callable, target: Target, module: Any, output: bool = True, send: bool = False,
                      context_names: Optional[frozenset] = None) -> Callable:
    """Build the rewritten function: the module's live globals, the original's line numbers, closure, defaults
    and attributes (``rebuild``); ``__wrapped__`` leads back to the original."""
    lines, first_line = inspect.getsourcelines(original)
    names = symmetric_context_names(module) if context_names is None else context_names
    new_source = rewrite_function_source(textwrap.dedent("".join(lines)), target, output=output, send=send,
                                         context_names=names)
    new_fn = rebuilt_function(original, new_source, first_line)
    setattr(new_fn, REWRITTEN_MARK, True)
    new_fn.__sglang_cp_symm_source__ = new_source
    return new_fn


def _restore_copy(module: Any, name: str, wrapper: Any, original: Any) -> Callable[[], None]:
    """Undo one rebinding, unless someone rebound that name again since (then it is theirs)."""

    def restore() -> None:
        if getattr(module, name, None) is wrapper:
            setattr(module, name, original)

    return restore


def _run_all(undo: List[Callable[[], None]]) -> None:
    for step in reversed(undo):
        try:
            step()
        except Exception:  # pragma: no cover - restoring attributes does not fail
            pass


class Patcher:
    """Executes the plan (``plan``) in this process, and keeps what was changed so it can be reported and undone.

    The plan is made when the first module of the register is imported (``_on_import``),
    not when the plugin loads: by then the engine's module has imported torch, so the
    NCCL read is the one the engine itself will use (``nccl_library``), and the
    targets' source files are the ones being imported. Until then every target waits
    for its import.

    Its collaborators come from the plugin object (``activation.Plugin``): the ``watchdog`` measures the
    contexts of every function it rewrites, the ``race_guard`` holds the contexts the plan guards, ``table``
    is where it binds the openers of the register's modules and puts the CP pool fix's router
    (``context_hooks``), and ``pools`` (id(group) -> pool) is where that router keeps the CP group's own pools.
    """

    def __init__(self, watchdog: Optional[PoolWatchdog] = None, race_guard: Optional[RaceGuard] = None,
                 pools: Optional[Dict[int, Any]] = None, table: Optional[ContextTable] = None) -> None:
        self.watchdog = PoolWatchdog() if watchdog is None else watchdog
        self.table = self.watchdog.table if table is None else table  # the openers' (``context_hooks``)
        self.race_guard = RaceGuard(self.table) if race_guard is None else race_guard
        self.pools: Dict[int, Any] = {} if pools is None else pools
        self._lock = threading.RLock()
        self.active = False
        self.settings = Settings()
        self.release: Optional[Release] = None
        self._build: Optional[Build] = None
        self.statuses: Dict[str, TargetStatus] = {}
        self.plan: Optional[ProcessPlan] = None
        self._nccl_given: Optional[NcclVersion] = None
        self._hooked_modules: set = set()
        self._undo: List[Callable[[], None]] = []
        self.on_settled: List[Callable[[], None]] = []  # called once, when no target waits for an import any more

    @property
    def decision(self) -> Optional[Decision]:
        return None if self.plan is None else self.plan.decision

    @property
    def nccl_source(self) -> str:
        return "" if self.plan is None else self.plan.facts.nccl_from

    # -- reporting -----------------------------------------------------------------
    def _set(self, name: str, where: str, state: State, detail: str = "") -> None:
        planned = self.plan.entry(name) if self.plan is not None else None
        self.statuses[name] = TargetStatus(name, where, state, detail, planned)
        if state == SKIPPED:
            logger.warning("sglang-cp-symm: %s (sglang %s) left untouched: %s", where, self.release, detail)
            if self.settings.strict:
                raise StrictModeError(f"{where} (sglang {self.release}) was skipped: {detail}")

    def settled(self) -> bool:
        """True when no target waits for its module's import any more."""
        return self.active and all(s.state != WAITING for s in self.statuses.values())

    # -- applying ------------------------------------------------------------------
    def apply(self, settings: Settings, build: Optional[Build], nccl: Optional[NcclVersion] = None) -> None:
        """Apply the register for the installed sglang (``build``: ``releases.installed_build``, None where there is
        none). ``nccl`` overrides the detected NCCL (rehearsals, tests)."""
        with self._lock:
            if self.active:
                return
            release = None if build is None else build.release
            self.settings, self.release, self._build, self._nccl_given = settings, release, build, nccl
            self.statuses, self.plan = {}, None
            self.active = True
            if release is None or not is_supported(release):  # nothing to wait for: the plan says why
                self._plan_now()
                return
            for target in targets_for(release):
                self._set(target.name, target.dotted, WAITING)
            self._set(POOL_FIX.name, f"{POOL_FIX.module}.{POOL_FIX.context_class}", WAITING)
            # every target's module and the pool's: the race guard, decided at the first of them, may hold them all
            modules = {t.module for t in targets_for(release)} | {POOL_FIX.module}
            for module_name in sorted(modules):
                self._when_imported(module_name)

    def _plan_now(self) -> ProcessPlan:
        """Make the plan from this process's facts (once), and set every entry that waits for no import."""
        if self.plan is not None:
            return self.plan
        facts = gather_facts(self.settings, self._build, nccl=self._nccl_given)
        self.plan = plan = make_plan(facts)
        if plan.problem is not None:
            where = "sglang" if self.release is None else f"sglang {self.release}"
            self._set("sglang", where, SKIPPED, plan.problem)
            return plan
        self.race_guard.engage(plan.guard)
        for note in plan.notes:
            self.table.log.warning_once(f"plan-note-{note[:40]}", "sglang-cp-symm: %s", note)
        if self.settings.enabled and plan.guard.engaged:
            self._set(GUARD_ENTRY, f"every context of the {', '.join(plan.guard.groups)} groups", GUARDED,
                      plan.guard.reason)
            report_once(plan.guard, self.table.log)
        for entry in plan.entries():
            status = self.statuses.get(entry.name)
            if status is not None and status.state == WAITING and entry.action == Action.NONE:
                self._set(entry.name, entry.where, entry.state, entry.detail)
        return plan

    def _when_imported(self, module_name: str) -> None:
        if module_name in self._hooked_modules:
            if module_name in sys.modules:
                self._on_import(sys.modules[module_name])
            return
        self._hooked_modules.add(module_name)
        wrapt.register_post_import_hook(self._on_import, module_name)

    def _on_import(self, module: Any) -> None:
        """Post-import hook. Only strict mode may raise out of it: the engine's module must import regardless."""
        with self._lock:
            if not self.active or self.release is None:
                return
            try:
                self._patch_module(module)
            except StrictModeError as exc:  # strict mode: the engine stops here, at the import of its module
                raise strict_exit(str(exc)) from None
            except Exception as exc:  # a defect here must never fail the engine's own import
                try:
                    self._give_up(module, f"patching failed: {type(exc).__name__}: {str(exc)[:200]}")
                except StrictModeError as strict:
                    raise strict_exit(str(strict)) from None
            if self.settled():
                callbacks, self.on_settled = list(self.on_settled), []
                for callback in callbacks:
                    try:
                        callback()
                    except Exception as exc:  # the status line or a hook: never the engine's import
                        self.table.log.warning_once(
                            f"on-settled-{getattr(callback, '__qualname__', callback)}",
                            "sglang-cp-symm: %s failed after patching (%s: %s)",
                            getattr(callback, "__qualname__", "a callback"), type(exc).__name__, str(exc)[:200])

    def _give_up(self, module: Any, detail: str) -> None:
        """Mark whatever still waits on ``module`` as skipped with ``detail``."""
        for target in targets_for(self.release):
            status = self.statuses.get(target.name)
            if target.module == module.__name__ and status is not None and status.state == WAITING:
                self._set(target.name, target.dotted, SKIPPED, detail)
        status = self.statuses.get(POOL_FIX.name)
        if module.__name__ == POOL_FIX.module and status is not None and status.state == WAITING:
            self._set(POOL_FIX.name, status.where, SKIPPED, detail)

    def _patch_module(self, module: Any) -> None:
        """Execute the plan's entries whose module this is."""
        plan = self._plan_now()
        register_module = False
        compiled: Dict[tuple, Any] = {}  # the module's unedited compile, which every target's source proof shares
        for target in targets_for(self.release):
            if target.module != module.__name__:
                continue
            register_module = plan.problem is None
            status = self.statuses.get(target.name)
            entry = plan.entry(target.name)
            if status is None or status.state != WAITING or entry is None:
                continue
            if entry.action == Action.GUARD:
                self._guard_target(target, module)
            elif entry.action == Action.PATCH:
                self.patch_target(target, module, entry.output, entry.send, compiled)
            else:
                self._set(target.name, target.dotted, entry.state, entry.detail)
        if register_module:  # the contexts this module opens are where the plugin acts, whatever the plan did to
            # its targets: upstream's own and held-back gathers are watched and guarded there too (``context_hooks``)
            try:
                self._undo.append(self.table.bind(module, sorted(symmetric_context_names(module))))
            except Exception as exc:  # the module's contexts stay sglang's own: not watched, routed or guarded
                self.table.log.warning_once(f"bind-{module.__name__}", "sglang-cp-symm: the contexts %s opens are "
                                            "left as sglang's own (%s: %s)", module.__name__, type(exc).__name__,
                                            str(exc)[:200])
        if module.__name__ == POOL_FIX.module:
            self._execute_pool(module, plan)

    def _guard_target(self, target: Target, module: Any) -> None:
        """The race guard holds the contexts this CP all-gather opens (upstream's or the plugin's)."""
        try:
            _, _, current = resolve(module, target.function)
        except (AttributeError, KeyError):
            self._set(target.name, target.dotted, ABSENT)
            return
        self.race_guard.guard_opener(current)
        self._set(target.name, target.dotted, GUARDED)

    def _execute_pool(self, module: Any, plan: ProcessPlan) -> None:
        """The CP pool fix as planned; with the race guard engaged, the context class gets the guard's hooks."""
        if self.race_guard.engaged:
            cls = getattr(module, POOL_FIX.context_class, None)
            if isinstance(cls, type):
                self.race_guard.hook_class(cls)
            else:
                self._set(GUARD_ENTRY, f"{POOL_FIX.module}.{POOL_FIX.context_class}", SKIPPED,
                          f"{POOL_FIX.context_class} is not a class in this release: the race guard cannot hold "
                          "its contexts")
        status, entry = self.statuses.get(POOL_FIX.name), plan.pool
        if status is None or status.state != WAITING or entry is None:
            return
        if entry.action == Action.PATCH:
            self._patch_pool(module)
        else:
            self._set(POOL_FIX.name, status.where, entry.state, entry.detail)

    def patch_target(self, target: Target, module: Any, output: bool, send: bool,
                     compiled: Optional[Dict[tuple, Any]] = None) -> TargetStatus:
        """Patch one target of ``module`` (or refuse, leaving it as it was); returns its status. ``compiled``: the
        module compiles its source proof may share with the module's other targets (``rebuild.build_code``)."""
        try:
            plan = plan_target(target, module, output, send, compiled)
        except Refused as refused:
            self._set(target.name, target.dotted, refused.state, refused.detail)
            return self.statuses[target.name]
        except Exception as exc:  # a defect in a check: refuse rather than guess
            self._set(target.name, target.dotted, SKIPPED, f"patching failed: {type(exc).__name__}: {str(exc)[:200]}")
            return self.statuses[target.name]
        undo: List[Callable[[], None]] = []
        try:
            for name, value in plan.inject.items():
                setattr(module, name, value)
                undo.append(lambda m=module, n=name: m.__dict__.pop(n, None))
            new_fn = compile_rewritten(plan.original, target, module, output=plan.output, send=plan.send,
                                       context_names=plan.context_names)
            # The rewritten function itself takes the original's place (no wrapper between caller and callee: the
            # call costs what the original's did, bench/overhead.py); the post-import hook that does it is wrapt's.
            setattr(plan.owner, plan.attr, new_fn)
            undo.append(lambda o=plan.owner, a=plan.attr, v=plan.current: setattr(o, a, v))
            if not isinstance(plan.owner, type):
                self._rebind_copies(plan.original, new_fn, module, undo)
            self.watchdog.watch(new_fn.__code__)
        except Exception as exc:  # roll the whole change back: the function stays exactly as it was
            _run_all(undo)
            self._set(target.name, target.dotted, SKIPPED, f"patching failed: {type(exc).__name__}: {str(exc)[:200]}")
            return self.statuses[target.name]
        self._undo.extend(undo)
        self._set(target.name, target.dotted, PATCHED,
                  "+".join(k for k, on in (("output", plan.output), ("send", plan.send)) if on))
        return self.statuses[target.name]

    def _rebind_copies(self, original: Any, wrapper: Any, owner_module: Any, undo: List[Callable[[], None]]) -> None:
        for mod in list(sys.modules.values()):
            if mod is None or mod is owner_module:
                continue
            try:
                items = list(vars(mod).items())
            except TypeError:
                continue
            for name, value in items:
                if value is original:
                    setattr(mod, name, wrapper)
                    undo.append(_restore_copy(mod, name, wrapper, original))

    def _patch_pool(self, module: Any) -> None:
        where = f"{POOL_FIX.module}.{POOL_FIX.context_class}"
        cls = getattr(module, POOL_FIX.context_class, None)
        if not isinstance(cls, type):
            self._set(POOL_FIX.name, where, SKIPPED, f"{POOL_FIX.context_class} is not a class in this release")
            return
        init = cls.__dict__.get("__init__")
        init_names = getattr(getattr(init, "__code__", None), "co_names", ())
        if PATCHED_POOL_MARK in vars(module) or PATCHED_POOL_MARK in init_names:
            self._set(POOL_FIX.name, where, UPSTREAM, "in the source already (sglang-cp-symm's patches/ applied)")
            return
        if UPSTREAM_POOL_MARK in cls.__dict__:
            self._set(POOL_FIX.name, where, UPSTREAM, f"the release registers every segment with every communicator "
                      f"at context exit ({POOL_FIX.fixed_by})")
            return
        shape = group_pool.context_shape(cls)
        if shape is None or "__init__" not in cls.__dict__ or "__enter__" not in cls.__dict__:
            self._set(POOL_FIX.name, where, SKIPPED, "SymmetricMemoryContext names its pool in an unknown way")
            return
        table = self.table
        try:
            router = group_pool.GroupPoolRouter(module, shape, POOL_FIX.group_getter(self.release), self.pools)
        except Exception as exc:
            self._set(POOL_FIX.name, where, SKIPPED, f"patching failed: {type(exc).__name__}: {str(exc)[:200]}")
            return
        table.router = router  # the openers route the CP group's contexts from now on (``context_hooks``)
        self._undo.append(lambda: setattr(table, "router", None) if table.router is router else None)
        self._set(POOL_FIX.name, where, PATCHED, shape)

    # -- undoing -------------------------------------------------------------------
    def unpatch(self) -> None:
        with self._lock:
            while self._undo:
                self._undo.pop()()
            self.race_guard.disengage()
            self.statuses, self.plan = {}, None
            self.active = False
            self.on_settled = []
