"""Apply everything the plugin does to this process, in order, and take it back.

1. ``settings.set_applied``: the switches every later step (and the warm-up) reads.
2. ``patching.PATCHER``: the register's targets and the CP pool fix, each when its module is imported.
3. ``hooks.INSTALLER``: the warm-up and the pool watchdog, whatever the NCCL policy decided
   for the targets (upstream's own CP buffers and held-back ones grow the pool just the same).
4. One status line (``report``), once no target waits for its module any more.

``unapply`` undoes the three in reverse. The entry point (``plugin``) and the public
``patch()`` both come through here, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Optional

from . import logs, settings as switches
from .hooks import INSTALLER
from .nccl_policy import NcclVersion
from .patching import PATCHER
from .report import status_line
from .settings import Settings
from .watchdog import ensure_run_id
from ..releases import Build, Release


def apply(settings: Settings, release: Optional[Release], nccl: Optional[NcclVersion] = None,
          announce: bool = True, build: Optional[Build] = None) -> None:
    """Apply the plugin for ``release``; ``nccl`` judges the policy as for that NCCL (rehearsals, tests); ``build``
    (``releases.installed_build``) gives the plan the version string and why it cannot be read, where it cannot."""
    if PATCHER.active:
        return
    switches.set_applied(settings)
    PATCHER.apply(settings, release, nccl, release_text=None if build is None else build.shown,
                  release_problem=None if build is None else build.problem)
    ensure_run_id()  # before sglang spawns its children, so that every rank of one launch writes to one folder
    INSTALLER.install(settings, release)
    if announce:
        if PATCHER.settled():
            _announce()
        else:
            PATCHER.on_settled.append(_announce)


def _announce() -> None:
    logs.info(status_line(PATCHER, switches.current()))


def unapply() -> None:
    INSTALLER.uninstall()
    PATCHER.unpatch()
    switches.set_applied(None)
