"""The plugin object: one per process, it owns every piece of the plugin's state, applies it and takes it back.

``Plugin`` holds, from its creation to the end of the process:

- ``settings``: the switches it was applied with (``patch()`` may be given its own), while applied;
- ``log``: its records held until sglang configures logging, and the warnings said once (``logs.PluginLog``);
- ``patcher``: the plan, the patch records and the CP pool fix (``patching.Patcher``);
- ``race_guard``: the groups and openers it holds (``race_guard.RaceGuard``);
- ``warmup``: what this process's warm-up did (``warmup.WarmupState``);
- ``watchdog``: the pool growths counted (``watchdog.PoolWatchdog``);
- ``installer``: the warm-up and watchdog hooks (``hooks.HookInstaller``);
- ``table``: what the openers of the CP all-gathers' contexts read (``context_hooks.ContextTable``):
  the roles and the watchdog as listener, the guarded groups, the CP pool fix's router;
- ``cp_pools``: the CP group's own pools (id(group) -> ``torch.cuda.MemPool``), filled by the pool
  fix's router and read by the watchdog.

Each part is handed what it works with when the object is built; none of them looks anything up
through a module. ``apply``, in order:

1. the settings, so that every later step (and the warm-up) reads the same switches;
2. the patcher: the register's targets and the CP pool fix, each when its module is imported;
3. the hook installer: the warm-up and the pool watchdog, whatever the NCCL policy decided for the
   targets (upstream's own CP buffers and held-back ones grow the pool just the same);
4. one status line (``report``), once no target waits for its module any more.

``unapply`` undoes the three in reverse. Both are idempotent (twice is once), as OpenTelemetry's
``BaseInstrumentor.instrument``/``uninstrument`` are. The parts live on after ``unapply``, as one
process's record: the warm-up runs once per process, and the pools and the watchdog's counts belong to
the process, not to one application.

The entry point (``plugin``), the public ``patch()``/``unpatch()``/``status()`` and the command line all
come through the functions below, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .context_hooks import ContextTable
from .hooks import HookInstaller
from .logs import PluginLog
from .nccl_policy import NcclVersion
from .patching import Patcher
from .race_guard import RaceGuard
from .report import status_line
from .settings import Settings, read_settings
from .warmup import WarmupState
from .watchdog import PoolWatchdog, ensure_run_id, sglang_pools
from ..releases import installed_build


class Plugin:
    """The plugin in this process: its parts, wired to each other once, and whether it is applied."""

    def __init__(self) -> None:
        self.applied: Optional[Settings] = None
        self.log = PluginLog()
        self.table = ContextTable(self.log)
        self.cp_pools: Dict[int, Any] = {}
        self.warmup = WarmupState()
        self.watchdog = PoolWatchdog(pools=self._pools, table=self.table)
        self.race_guard = RaceGuard(self.table)
        self.patcher = Patcher(watchdog=self.watchdog, race_guard=self.race_guard, pools=self.cp_pools,
                               table=self.table)
        self.installer = HookInstaller(self.watchdog, self.warmup, self.table, settings=lambda: self.settings,
                                       decision=lambda: self.patcher.decision)

    def _pools(self) -> Dict[str, Any]:
        return sglang_pools(self.cp_pools)

    @property
    def active(self) -> bool:
        return self.patcher.active

    @property
    def settings(self) -> Settings:
        """The settings it was applied with (an explicit ``patch()`` too), else the environment's."""
        return self.applied if self.applied is not None else read_settings()

    def apply(self, settings: Settings, *, nccl: Optional[NcclVersion] = None) -> None:
        """Apply the plugin for the installed sglang (``releases.installed_build``: its release, or why its
        version cannot be read); ``nccl`` judges the policy as for that NCCL (rehearsals, tests). A second call
        while applied does nothing."""
        if self.patcher.active:
            return
        self.applied = settings
        self.watchdog.report_dir = settings.report_dir
        self.patcher.apply(settings, installed_build(), nccl)
        ensure_run_id()  # before sglang spawns its children, so that every rank of one launch writes to one folder
        self.installer.install(settings, self.patcher.release)
        if self.patcher.settled():
            self.announce()
        else:
            self.patcher.on_settled.append(self.announce)

    def announce(self) -> None:
        self.log.info(status_line(self))

    def unapply(self) -> None:
        """Take back everything ``apply`` changed; a second call does nothing."""
        self.installer.uninstall()
        self.patcher.unpatch()
        self.applied = None
        self.watchdog.report_dir = None


#: THE process's plugin object, or None before the first activation. The one piece of module-level state the
#: package keeps, because three callers that share nothing else must find the object of this process: the
#: entry point and the ``.pth`` bootstrap (which apply it), ``status()``/``unpatch()`` of the public API, and
#: the command line. Everything else is handed the object or one of its parts.
_current: Optional[Plugin] = None


def current() -> Optional[Plugin]:
    """This process's plugin object, or None if nothing applied the plugin yet."""
    return _current


def plugin() -> Plugin:
    """This process's plugin object, made on first use (unapplied)."""
    global _current
    if _current is None:
        _current = Plugin()
    return _current


def apply(settings: Settings, *, nccl: Optional[NcclVersion] = None) -> None:
    """Apply this process's plugin (``Plugin.apply``)."""
    plugin().apply(settings, nccl=nccl)


def unapply() -> None:
    """Take this process's plugin back, if there is one (``Plugin.unapply``)."""
    if _current is not None:
        _current.unapply()


def status() -> dict:
    """What the plugin did in this process (``report.status_dict``); a plugin never applied reports as new."""
    from .report import status_dict

    return status_dict(_current if _current is not None else Plugin())
