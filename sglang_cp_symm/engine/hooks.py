"""Attach the warm-up and the pool watchdog to the engine, where the register (``targets.HOOKS``) says.

Same rules as the target patches (``patching``): wrapt post-import hooks, so the
import order does not matter; everything changed is recorded and ``uninstall()``
restores it; nothing raises into the engine unless strict mode asked for it.
Each hook is a thin adapter: the logic lives in ``warmup`` and ``watchdog``. The adapters that need
state are bound methods of the installer, which the plugin object (``activation.Plugin``) builds with
its parts: the watchdog, the warm-up state, the ``context_hooks.ContextTable``, and two readers of
what is applied (the settings, the NCCL decision).

The hooks, by register name:
- ``warmup.named``: sglang's ``@warmup(name)`` decorator registers ``cp_symm_max_tokens``, which runs
  ``warmup.run_warmup`` with the installer's state, settings and decision.
- ``warmup.cli``: ``ServerArgs.from_cli_args`` appends ``cp_symm_max_tokens`` to ``--warmups``.
- ``warmup.first_request``: ``TokenizerManager.generate_request`` makes the first request
  wait for the warm-up where no named warm-up ran (the offline Engine); it removes
  itself once the warm-up is over, so serving pays nothing for it.
- ``watchdog.rank``: ``Scheduler.handle_generate_request`` tells each rank when its warm-up
  begins and ends.
- ``watchdog.context``: on ``SymmetricMemoryContext``'s module, the watchdog becomes the listener of the
  contexts the CP all-gathers open (``context_hooks``), and the allocator counts its calls.
"""

from __future__ import annotations

import threading
from enum import Enum
from typing import Any, Callable, Dict, List, Optional

import wrapt

from . import warmup as warmup_mod
from .context_hooks import WATCH, ContextTable
from .patching import is_rewritten, resolve
from .settings import Settings, strict_exit
from ..targets import HOOKS, Hook, targets_for
from .warmup import WarmupState
from .watchdog import PoolWatchdog
from ..releases import Release
from .logs import logger


class HookState(str, Enum):
    """Where one hook stands (a ``str``, so ``status()`` and the status line show the word)."""

    INSTALLED = "installed"
    WAITING = "waiting for import"
    SKIPPED = "skipped"
    OFF = "off"
    RELEASED = "released"

    def __str__(self) -> str:
        return self.value


INSTALLED, WAITING, SKIPPED, OFF, RELEASED = (HookState.INSTALLED, HookState.WAITING, HookState.SKIPPED,
                                              HookState.OFF, HookState.RELEASED)


# -- the adapter that needs no state ----------------------------------------------------------
def add_to_cli_warmups(wrapped, instance, args, kwargs):
    """``ServerArgs.from_cli_args(args)``: the user's own ``--warmups`` stay and run first, ours runs last."""
    namespace = args[0] if args else kwargs.get("args")
    if namespace is not None and hasattr(namespace, "warmups"):
        names = [n for n in (getattr(namespace, "warmups", None) or "").split(",") if n]
        if warmup_mod.WARMUP_NAME not in names:
            namespace.warmups = ",".join(names + [warmup_mod.WARMUP_NAME])
    return wrapped(*args, **kwargs)


def unwrap(value: Any) -> Any:
    """The engine's own function under the plugin's wrapt wrapper or rewritten copy; anything else as it is."""
    return value.__wrapped__ if isinstance(value, wrapt.FunctionWrapper) or is_rewritten(value) else value


def wrap(module: Any, dotted: str, wrapper: Callable) -> Callable[[], None]:
    """Wrap ``module.<dotted>`` with a wrapt ``wrapper``; returns the function that puts the original back."""
    owner, attr, original = resolve(module, dotted)
    wrapt.wrap_function_wrapper(module, dotted, wrapper)
    return lambda: setattr(owner, attr, original)


def _watch_gather(watchdog: PoolWatchdog, module: Any, target: Any) -> None:
    """Measure the contexts this CP all-gather opens, whether the plugin rewrote it or upstream wrote it so."""
    try:
        _, _, current = resolve(module, target.function)
    except (AttributeError, KeyError):
        return  # not in this release's module: the register reports it as absent
    code = getattr(unwrap(current), "__code__", None)
    if code is not None:
        watchdog.watch(code)


# -- installing -----------------------------------------------------------------------------
class HookInstaller:
    """Which hooks are on, and how to take each back; the adapters that need state are its methods."""

    def __init__(self, watchdog: PoolWatchdog, warmup: WarmupState, table: ContextTable,
                 settings: Callable[[], Settings] = Settings, decision: Callable[[], Any] = lambda: None) -> None:
        self.watchdog, self.warmup, self.table = watchdog, warmup, table
        self._settings, self._decision = settings, decision  # read when the warm-up runs, not at install
        self._lock = threading.RLock()
        self.statuses: Dict[str, HookState] = {}
        self.details: Dict[str, str] = {}  # why a hook was skipped
        self._undo: Dict[str, List[Callable[[], None]]] = {}
        self._wanted: Dict[str, Hook] = {}
        self._strict = False
        self._attachers: Dict[str, Callable[[Any, Hook], List[Callable[[], None]]]] = {
            "warmup.named": self._attach_named,
            "warmup.cli": _attach_one(add_to_cli_warmups),
            "warmup.first_request": _attach_one(self.first_request_guard),
            "watchdog.rank": _attach_one(self.on_generate_request),
            "watchdog.context": self._attach_context,
        }

    # -- the adapters -------------------------------------------------------------------------
    def run_warmup(self, disaggregation_mode: str, tokenizer_manager: Any) -> Any:
        """The warm-up as sglang calls a named one, with this plugin's state, settings and NCCL decision."""
        return warmup_mod.run_warmup(disaggregation_mode, tokenizer_manager, self.warmup, self._settings(),
                                     self._decision())

    async def first_request_guard(self, wrapped, instance, args, kwargs):
        """``TokenizerManager.generate_request``: the first request of this process waits for the warm-up, at most
        its deadline and the time to stop it (``warmup_fanout.Deadline.bound_s``); then it goes on whatever the
        outcome, unless strict mode turned a failed warm-up into ``WarmupFailed``."""
        obj = args[0] if args else kwargs.get("obj")
        if not self.warmup.done and not warmup_mod.is_warmup_request(obj):
            await warmup_mod.ensure_warmed(instance, self.warmup, self.run_warmup)
        if self.warmup.done:  # warmed here or by the named warm-up: later requests go straight through
            self.release("warmup.first_request")
        async for out in wrapped(*args, **kwargs):
            yield out

    def on_generate_request(self, wrapped, instance, args, kwargs):
        """``Scheduler.handle_generate_request``: every rank of a TP group receives each request."""
        try:
            warmup_mod.observe_request(instance, args[0] if args else kwargs.get("recv_req"), self.watchdog)
        except Exception:  # the report is never worth a failed request
            logger.debug("sglang-cp-symm: warm-up bookkeeping failed", exc_info=True)
        return wrapped(*args, **kwargs)

    # -- installing ---------------------------------------------------------------------------
    def install(self, settings: Any, release: Optional[Release]) -> None:
        """Install the hooks the switches ask for; each one waits for its module's import."""
        with self._lock:
            self._strict = settings.strict
            for hook in HOOKS:
                if release is None or not hook.applies_to(release):
                    continue
                if not hook.wanted(settings):
                    self.statuses[hook.name] = OFF
                    continue
                self._wanted[hook.name] = hook
                self.statuses[hook.name] = WAITING
                wrapt.register_post_import_hook(self._on_import, hook.module)
            if settings.watchdog:
                self.watchdog.count_in_metrics()
                for target in targets_for(release) if release is not None else ():
                    wrapt.register_post_import_hook(
                        lambda module, t=target, dog=self.watchdog: _watch_gather(dog, module, t), target.module)

    def _on_import(self, module: Any) -> None:
        with self._lock:
            for name, hook in list(self._wanted.items()):
                if hook.module == module.__name__ and self.statuses.get(name) == WAITING:
                    self._attach(hook, module)

    def _attach(self, hook: Hook, module: Any) -> None:
        try:
            undo = self._attachers[hook.name](module, hook)
        except Exception as exc:  # the engine changed shape: report, never break its import
            detail = f"{hook.module}.{hook.attribute}: {type(exc).__name__}: {exc}"
            self.statuses[hook.name], self.details[hook.name] = SKIPPED, detail
            logger.warning("sglang-cp-symm: %s hook not installed (%s)", hook.name, detail)
            if self._strict:
                raise strict_exit(f"{hook.name} could not be installed: {detail}") from None
            return
        self._undo[hook.name] = undo
        self.statuses[hook.name] = INSTALLED

    def release(self, name: str) -> None:
        """Take one hook back early (the first-request guard, once the warm-up is over)."""
        with self._lock:
            for undo in reversed(self._undo.pop(name, [])):
                undo()
            if self.statuses.get(name) == INSTALLED:
                self.statuses[name] = RELEASED

    def uninstall(self) -> None:
        with self._lock:
            for name in reversed(list(self._undo)):
                self.release(name)
            self._wanted.clear()
            self.statuses.clear()
            self.details.clear()
            self.watchdog.stop_metrics()

    def describe(self) -> Dict[str, str]:
        """Each hook's state as the status shows it: the word, and ``skipped: <why>``."""
        return {name: f"{state}: {self.details[name]}" if name in self.details and state == SKIPPED else str(state)
                for name, state in self.statuses.items()}

    def skipped(self) -> Dict[str, str]:
        """The hooks that could not be installed, and why."""
        return {name: self.describe()[name] for name, state in self.statuses.items() if state == SKIPPED}

    # -- what each hook attaches ----------------------------------------------------------------
    def _attach_named(self, module: Any, hook: Hook) -> List[Callable[[], None]]:
        registry = getattr(module, "_warmup_registry")
        run = self.run_warmup

        async def cp_symm_max_tokens(disaggregation_mode: str, tokenizer_manager: Any) -> dict:
            return await run(disaggregation_mode, tokenizer_manager)

        cp_symm_max_tokens.__doc__ = warmup_mod.run_warmup.__doc__
        module.warmup(warmup_mod.WARMUP_NAME)(cp_symm_max_tokens)
        return [lambda: registry.pop(warmup_mod.WARMUP_NAME, None)]

    def _attach_context(self, module: Any, hook: Hook) -> List[Callable[[], None]]:
        """The watchdog around the contexts the CP all-gathers open: the listener of the openers that the patcher
        binds in the register's modules (``context_hooks``); sglang's class itself is left alone."""
        from .send_staging import cp_symm_stage_send

        watchdog, table = self.watchdog, self.table
        context_class = getattr(module, hook.attribute)
        if not isinstance(context_class, type):
            raise TypeError(f"{hook.attribute} is not a class")
        watchdog.watch(cp_symm_stage_send.__code__)
        watchdog.measuring = True
        uncount = watchdog.count_allocations(module)  # the signal: a counter in the allocator sglang compiles
        table.listener = watchdog

        def stop_measuring() -> None:
            watchdog.measuring = False
            if table.listener is watchdog:
                table.listener = None
            table.clear_roles(WATCH)

        return [stop_measuring, *([uncount] if uncount else [])]


def _attach_one(wrapper: Callable) -> Callable[[Any, Hook], List[Callable[[], None]]]:
    return lambda module, hook: [wrap(module, hook.attribute, wrapper)]
