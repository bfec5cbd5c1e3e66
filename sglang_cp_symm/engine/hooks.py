"""Attach the warm-up and the pool watchdog to the engine, where the register (``targets.HOOKS``) says.

Same rules as the target patches (``patching``): wrapt post-import hooks, so the
import order does not matter; everything changed is recorded and ``uninstall()``
restores it; nothing raises into the engine unless strict mode asked for it.
Each hook is a thin adapter: the logic lives in ``warmup`` and ``watchdog``.

The hooks, by register name:
- ``warmup.named``: sglang's ``@warmup(name)`` decorator registers ``run_warmup``.
- ``warmup.cli``: ``ServerArgs.from_cli_args`` appends ``cp_symm_max_tokens`` to ``--warmups``.
- ``warmup.first_request``: ``TokenizerManager.generate_request`` makes the first request
  wait for the warm-up where no named warm-up ran (the offline Engine); it removes
  itself once the warm-up is over, so serving pays nothing for it.
- ``watchdog.rank``: ``Scheduler.handle_generate_request`` tells each rank when its warm-up
  begins and ends.
- ``watchdog.context``: ``SymmetricMemoryContext.__enter__``/``__exit__`` measure pool growth.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional

import wrapt

from . import context_hooks
from . import warmup as warmup_mod
from .attributes import resolve, unwrap, wrap
from .settings import strict_exit
from ..targets import HOOKS, Hook, targets_for
from .watchdog import WATCHDOG
from ..releases import Release
from .logs import logger


INSTALLED, WAITING, SKIPPED, OFF, RELEASED = "installed", "waiting for import", "skipped", "off", "released"


# -- the adapters ---------------------------------------------------------------------------
def add_to_cli_warmups(wrapped, instance, args, kwargs):
    """``ServerArgs.from_cli_args(args)``: the user's own ``--warmups`` stay and run first, ours runs last."""
    namespace = args[0] if args else kwargs.get("args")
    if namespace is not None and hasattr(namespace, "warmups"):
        names = [n for n in (getattr(namespace, "warmups", None) or "").split(",") if n]
        if warmup_mod.WARMUP_NAME not in names:
            namespace.warmups = ",".join(names + [warmup_mod.WARMUP_NAME])
    return wrapped(*args, **kwargs)


async def first_request_guard(wrapped, instance, args, kwargs):
    """``TokenizerManager.generate_request``: the first request of this process waits for the warm-up, at most its
    deadline and the time to stop it (``warmup_deadline.Deadline.bound_s``); then it goes on whatever the outcome,
    unless strict mode turned a failed warm-up into ``WarmupFailed``."""
    obj = args[0] if args else kwargs.get("obj")
    if not warmup_mod.STATE.done and not warmup_mod.is_warmup_request(obj):
        await warmup_mod.ensure_warmed(instance)
    if warmup_mod.STATE.done:  # warmed here or by the named warm-up: later requests go straight through
        INSTALLER.release("warmup.first_request")
    async for out in wrapped(*args, **kwargs):
        yield out


def on_generate_request(wrapped, instance, args, kwargs):
    """``Scheduler.handle_generate_request``: every rank of a TP group receives each request."""
    try:
        warmup_mod.observe_request(instance, args[0] if args else kwargs.get("recv_req"))
    except Exception:  # the report is never worth a failed request
        logger.debug("sglang-cp-symm: warm-up bookkeeping failed", exc_info=True)
    return wrapped(*args, **kwargs)


# -- installing -----------------------------------------------------------------------------
class HookInstaller:
    """Which hooks are on, and how to take each back."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.statuses: Dict[str, str] = {}
        self._undo: Dict[str, List[Callable[[], None]]] = {}
        self._wanted: Dict[str, Hook] = {}
        self._strict = False

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
                from . import metrics

                metrics.install(WATCHDOG)
                for target in targets_for(release) if release is not None else ():
                    wrapt.register_post_import_hook(lambda module, t=target: _watch_gather(module, t), target.module)

    def _on_import(self, module: Any) -> None:
        with self._lock:
            for name, hook in list(self._wanted.items()):
                if hook.module == module.__name__ and self.statuses.get(name) == WAITING:
                    self._attach(hook, module)

    def _attach(self, hook: Hook, module: Any) -> None:
        try:
            undo = _ATTACH[hook.name](module, hook)
        except Exception as exc:  # the engine changed shape: report, never break its import
            detail = f"{hook.module}.{hook.attribute}: {type(exc).__name__}: {exc}"
            self.statuses[hook.name] = f"{SKIPPED}: {detail}"
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
            from . import metrics

            metrics.uninstall(WATCHDOG)

    def describe(self) -> Dict[str, str]:
        return dict(self.statuses)


def _watch_gather(module: Any, target: Any) -> None:
    """Measure the contexts this CP all-gather opens, whether the plugin rewrote it or upstream wrote it so."""
    try:
        _, _, current = resolve(module, target.function)
    except (AttributeError, KeyError):
        return  # not in this release's module: the register reports it as absent
    code = getattr(unwrap(current), "__code__", None)
    if code is not None:
        WATCHDOG.watch(code)


def _attach_named(module: Any, hook: Hook) -> List[Callable[[], None]]:
    registry = getattr(module, "_warmup_registry")
    module.warmup(warmup_mod.WARMUP_NAME)(warmup_mod.run_warmup)
    return [lambda: registry.pop(warmup_mod.WARMUP_NAME, None)]


def _attach_one(wrapper: Callable) -> Callable[[Any, Hook], List[Callable[[], None]]]:
    return lambda module, hook: [wrap(module, hook.attribute, wrapper)]


def _attach_context(module: Any, hook: Hook) -> List[Callable[[], None]]:
    """The watchdog around the contexts the CP all-gathers open (``context_hooks``: plain functions, no wrapper)."""
    from .send_staging import cp_symm_stage_send

    WATCHDOG.watch(cp_symm_stage_send.__code__)
    WATCHDOG.measuring = True
    uncount = WATCHDOG.count_allocations(module)  # the signal: a counter in the allocator sglang compiles

    def stop_measuring() -> None:
        WATCHDOG.measuring = False
        context_hooks.clear_roles(context_hooks.WATCH)

    return [stop_measuring, *([uncount] if uncount else []),
            context_hooks.install(getattr(module, hook.attribute), WATCHDOG)]


_ATTACH: Dict[str, Callable[[Any, Hook], List[Callable[[], None]]]] = {
    "warmup.named": _attach_named,
    "warmup.cli": _attach_one(add_to_cli_warmups),
    "warmup.first_request": _attach_one(first_request_guard),
    "watchdog.rank": _attach_one(on_generate_request),
    "watchdog.context": _attach_context,
}

INSTALLER = HookInstaller()
