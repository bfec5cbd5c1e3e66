"""sglang-cp-symm: attention context-parallel all-gathers in NCCL symmetric memory, on every sglang release.

Off unless ``SGLANG_CP_SYMM=1``. The public API is small:

- ``patch()``: apply the register to this process (what the entry point does).
- ``unpatch()``: restore everything that was changed.
- ``status()``: what was done, as a dict (release, mode, each target's state).
"""

from __future__ import annotations

__version__ = "0.1.0"

import dataclasses

from .nccl_policy import NcclVersion
from .patching import PATCHER
from .report import status_dict
from .settings import Settings, read_settings
from .versions import installed_sglang


def patch(settings: Settings | None = None, nccl: str | None = None) -> dict:
    """Apply the patches regardless of ``SGLANG_CP_SYMM`` (an explicit call is the opt-in).

    ``nccl`` ("2.27.7") decides the NCCL policy as if that NCCL were loaded; by default
    the loaded library is read.
    """
    chosen = settings or read_settings()
    if not chosen.enabled:
        chosen = dataclasses.replace(chosen, enabled=True)
    PATCHER.apply(chosen, installed_sglang(), None if nccl is None else NcclVersion.parse(nccl))
    return status()


def unpatch() -> None:
    PATCHER.unpatch()


def status() -> dict:
    return status_dict(PATCHER, PATCHER.settings if PATCHER.active else read_settings())


__all__ = ["__version__", "patch", "unpatch", "status"]
