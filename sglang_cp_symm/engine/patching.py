"""Apply the register to the running process with wrapt, and take it back.

Each target is patched by a wrapt post-import hook on its module, so it does not
matter whether sglang imported the module before or after the plugin loaded:
the hook fires at once for a module already imported, otherwise right after the
module's body runs and before any importer binds a name from it. Copies that
other modules bound earlier with ``from module import fn`` are rebound too.

The wrapper calls a copy of the function in which one statement, the output
allocation, sits inside sglang's own ``use_symmetric_memory`` (see ``rewrite``).
``unpatch()`` restores every attribute and copy it changed; applying twice is
the same as applying once. Nothing here raises into the engine unless strict
mode asked for it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import wrapt

from . import pool as group_pool
from . import send_staging
from .nccl_library import engine_nccl, sm90_or_later
from .nccl_policy import Decision, NcclVersion, decide
from .rewrite import REQUIRED_NAMES, STAGE_SEND_NAME, ShapeMismatch, rewrite_function_source
from .attributes import REWRITTEN_MARK, resolve, unwrap
from .settings import Settings, StrictModeError, strict_exit
from ..targets import (
    FIRST_SUPPORTED,
    LAST_SUPPORTED,
    POOL_FIX,
    SYMMETRIC_CONTEXT_NAME,
    Target,
    is_supported,
    targets_for,
)
from ..releases import Release
from .logs import logger
from .watchdog import WATCHDOG


PATCHED, UPSTREAM, ABSENT, SKIPPED, WAITING, HELD = (
    "patched", "upstream", "absent", "skipped", "waiting for import", "held back")


@dataclass
class TargetStatus:
    name: str
    where: str
    state: str
    detail: str = ""

    def __str__(self) -> str:
        if self.state in (SKIPPED, HELD):
            return f"{self.state}: {self.detail}"
        return f"{self.state} ({self.detail})" if self.state == PATCHED and self.detail else self.state


def compile_rewritten(original: Callable, target: Target, module: Any, output: bool = True, send: bool = False) -> Callable:
    """Build the rewritten function, with the module's live globals and its original line numbers."""
    if original.__code__.co_freevars:
        raise ShapeMismatch("the function closes over variables; it is not rewritten")
    lines, first_line = inspect.getsourcelines(original)
    new_source = rewrite_function_source("".join(lines), target, output=output, send=send)
    tree = ast.parse(new_source)
    ast.increment_lineno(tree, first_line - 1)
    code = compile(tree, inspect.getsourcefile(original) or "<sglang-cp-symm>", "exec")
    namespace: Dict[str, Any] = {}
    exec(code, module.__dict__, namespace)
    new_fn = namespace[original.__name__]
    # What callers can see stays the original's: the very default objects (never re-evaluated), keyword-only
    # defaults, annotations, name, qualified name, module, docstring, attributes; ``__wrapped__`` leads back.
    functools.update_wrapper(new_fn, original)
    new_fn.__defaults__, new_fn.__kwdefaults__ = original.__defaults__, original.__kwdefaults__
    setattr(new_fn, REWRITTEN_MARK, True)
    new_fn.__sglang_cp_symm_source__ = new_source
    return new_fn


def is_rewritten(value: Any) -> bool:
    """True for a function the plugin installed in place of an engine function."""
    return bool(getattr(value, REWRITTEN_MARK, False))


def _restore_copy(module: Any, name: str, wrapper: Any, original: Any) -> Callable[[], None]:
    """Undo one rebinding, unless someone rebound that name again since (then it is theirs)."""

    def restore() -> None:
        if getattr(module, name, None) is wrapper:
            setattr(module, name, original)

    return restore


class Patcher:
    """The process-wide patch state: what was changed, so that it can be reported and undone.

    The NCCL decision is taken when the first module of the register is imported
    (``_on_import``), not when the plugin loads: by then the engine's module has
    imported torch, so the NCCL read is the one the engine itself will use
    (``nccl_library``). Until then every target waits for its import.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.active = False
        self.settings = Settings()
        self.release: Optional[Release] = None
        self.statuses: Dict[str, TargetStatus] = {}
        self.decision: Optional[Decision] = None
        self.nccl_source = ""
        self._nccl_given: Optional[NcclVersion] = None
        self._hooked_modules: set = set()
        self._undo: List[Callable[[], None]] = []
        self.rewritten: Dict[str, Callable] = {}  # target name -> the rewritten function the wrapper calls
        self.on_settled: List[Callable[[], None]] = []  # called once, when no target waits for an import any more

    # -- reporting -----------------------------------------------------------------
    def _set(self, name: str, where: str, state: str, detail: str = "") -> None:
        self.statuses[name] = TargetStatus(name, where, state, detail)
        if state == SKIPPED:
            logger.warning("sglang-cp-symm: %s (sglang %s) left untouched: %s", where, self.release, detail)
            if self.settings.strict:
                raise StrictModeError(f"{where} (sglang {self.release}) was skipped: {detail}")

    def settled(self) -> bool:
        """True when no target waits for its module's import any more."""
        return self.active and all(s.state != WAITING for s in self.statuses.values())

    # -- applying ------------------------------------------------------------------
    def apply(self, settings: Settings, release: Optional[Release], nccl: Optional[NcclVersion] = None) -> None:
        """Apply the register for ``release``. ``nccl`` overrides the detected NCCL (rehearsals, tests)."""
        with self._lock:
            if self.active:
                return
            self.settings, self.release, self._nccl_given = settings, release, nccl
            self.statuses, self.decision, self.nccl_source = {}, None, ""
            self.active = True
            if release is None:
                self._set("sglang", "sglang", SKIPPED, "sglang is not installed in this environment")
                return
            if not is_supported(release):
                self._set(
                    "sglang",
                    f"sglang {release}",
                    SKIPPED,
                    f"release not in the register ({FIRST_SUPPORTED}..{LAST_SUPPORTED}); "
                    "upgrade sglang-cp-symm or pin a supported sglang",
                )
                return
            waiting = []
            for target in targets_for(release):
                if target.fixed_upstream_in(release) and not settings.send:
                    self._set(target.name, target.dotted, UPSTREAM, target.fixed_by)  # nothing to do whatever NCCL
                else:
                    self._set(target.name, target.dotted, WAITING)
                    waiting.append(target.module)
            pool_where = f"{POOL_FIX.module}.{POOL_FIX.context_class}"
            if POOL_FIX.applies_to(release):
                self._set(POOL_FIX.name, pool_where, WAITING)
            else:
                self._set(POOL_FIX.name, pool_where, UPSTREAM, POOL_FIX.fixed_by)
            modules = set(waiting) | ({POOL_FIX.module} if POOL_FIX.applies_to(release) else set())
            for module_name in sorted(modules):
                self._when_imported(module_name)

    def _decide(self) -> Decision:
        """The NCCL policy for this process, taken once, as late as possible (see the class docstring)."""
        if self.decision is None:
            if self._nccl_given is not None:
                nccl, self.nccl_source = self._nccl_given, "given"
            else:
                nccl, self.nccl_source = engine_nccl()
            hopper, _ = sm90_or_later()
            self.decision = decide(nccl, self.settings.send, self.settings.allow_nccl_race, hopper)
        return self.decision

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
                for target in targets_for(self.release):
                    status = self.statuses.get(target.name)
                    if target.module == module.__name__ and status is not None and status.state == WAITING:
                        self._set(target.name, target.dotted, SKIPPED,
                                  f"patching failed: {type(exc).__name__}: {str(exc)[:200]}")
            if self.settled():
                callbacks, self.on_settled = list(self.on_settled), []
                for callback in callbacks:
                    callback()

    def _patch_module(self, module: Any) -> None:
        decision = self._decide()
        for target in targets_for(self.release):
            status = self.statuses.get(target.name)
            if target.module != module.__name__ or status is None or status.state != WAITING:
                continue
            output_needed = not target.fixed_upstream_in(self.release)
            plan = (output_needed and decision.patch_outputs, decision.stage_send)
            if any(plan):
                self._patch_target(target, module, *plan)
            elif output_needed:
                self._set(target.name, target.dotted, HELD, decision.reason)
            else:
                self._set(target.name, target.dotted, UPSTREAM, target.fixed_by)
        if module.__name__ == POOL_FIX.module and self.statuses[POOL_FIX.name].state == WAITING:
            if decision.patch_outputs:
                self._patch_pool(module)
            else:  # registering CP buffers with the CP communicator would engage the kernel that was held back
                self._set(POOL_FIX.name, f"{POOL_FIX.module}.{POOL_FIX.context_class}", HELD, decision.reason)

    def _patch_target(self, target: Target, module: Any, output: bool, send: bool) -> None:
        try:
            owner, attr, current = resolve(module, target.function)
        except (AttributeError, KeyError):
            self._set(target.name, target.dotted, ABSENT)
            return
        original = unwrap(current)
        if not inspect.isfunction(original):
            self._set(target.name, target.dotted, SKIPPED, "not a plain function")
            return
        if output and SYMMETRIC_CONTEXT_NAME in original.__code__.co_names:
            output = False  # the release already opens the context here: never nest it
            if not send:
                self._set(target.name, target.dotted, UPSTREAM, "the function already opens the context")
                return
        try:
            self._inject_names(module, send)
            new_fn = compile_rewritten(original, target, module, output=output, send=send)
        except (ShapeMismatch, OSError, ImportError, AttributeError) as exc:
            self._set(target.name, target.dotted, SKIPPED, str(exc))
            return
        # The rewritten function itself takes the original's place (no wrapper between caller and callee: the
        # call costs what the original's did, bench/overhead.py); the post-import hook that does it is wrapt's.
        setattr(owner, attr, new_fn)
        WATCHDOG.watch(new_fn.__code__)
        self.rewritten[target.name] = new_fn
        self._undo.append(lambda o=owner, a=attr, v=current: setattr(o, a, v))
        if not isinstance(owner, type):
            self._rebind_copies(original, new_fn, module)
        self._set(target.name, target.dotted, PATCHED, "+".join(k for k, on in (("output", output), ("send", send)) if on))

    def _inject_names(self, module: Any, send: bool) -> None:
        """Make the names the rewritten code uses resolvable in the target module's globals."""
        needed = dict(REQUIRED_NAMES)
        if send:
            needed[STAGE_SEND_NAME] = send_staging.__name__
        for name, source_module in needed.items():
            if name in module.__dict__:
                continue
            value = getattr(importlib.import_module(source_module), name)
            setattr(module, name, value)
            self._undo.append(lambda m=module, n=name: m.__dict__.pop(n, None))

    def _rebind_copies(self, original: Any, wrapper: Any, owner_module: Any) -> None:
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
                    self._undo.append(_restore_copy(mod, name, wrapper, original))

    def _patch_pool(self, module: Any) -> None:
        where = f"{POOL_FIX.module}.{POOL_FIX.context_class}"
        cls = getattr(module, POOL_FIX.context_class, None)
        shape = group_pool.context_shape(cls) if isinstance(cls, type) else None
        if shape is None or "__init__" not in cls.__dict__ or "__enter__" not in cls.__dict__:
            self._set(POOL_FIX.name, where, SKIPPED, "SymmetricMemoryContext names its pool in an unknown way")
            return
        originals = {name: cls.__dict__[name] for name in ("__init__", "__enter__")}

        getter = POOL_FIX.group_getter(self.release)

        def route_to_group_pool(wrapped, instance, args, kwargs):
            wrapped(*args, **kwargs)
            try:
                group_pool.route_context_to_group_pool(instance, module, shape, getter)
            except Exception as exc:  # keep sglang's own pool rather than fail a forward pass
                logger.warning("sglang-cp-symm: CP pool not used for this context: %s", exc)

        def reenter(wrapped, instance, args, kwargs):
            group_pool.reenter_group_pool(instance)
            return wrapped(*args, **kwargs)

        wrapt.wrap_function_wrapper(cls, "__init__", route_to_group_pool)
        if shape == group_pool.MEM_POOL_CTX_SHAPE:
            wrapt.wrap_function_wrapper(cls, "__enter__", reenter)
        for name, value in originals.items():
            self._undo.append(lambda n=name, v=value: setattr(cls, n, v))
        self._set(POOL_FIX.name, where, PATCHED, shape)

    # -- undoing -------------------------------------------------------------------
    def unpatch(self) -> None:
        with self._lock:
            while self._undo:
                self._undo.pop()()
            self.statuses, self.rewritten = {}, {}
            self.decision = None
            self.active = False
            self.on_settled = []


PATCHER = Patcher()
