"""What each sglang release pins: torch, and the NCCL that torch pins (so the NCCL a default install runs).

sglang pins torch exactly and torch pins ``nvidia-nccl-cu12``/``-cu13`` exactly; sglang
pins no NCCL of its own. Read from the wheels' metadata (``sglang-X.dist-info/METADATA``
``Requires-Dist: torch==``; ``torch-T.dist-info/METADATA`` ``Requires-Dist: nvidia-nccl-cuNN==``):
torch 2.9.1 line 51 ``nvidia-nccl-cu12==2.27.5``, 2.11.0 line 45 ``nvidia-nccl-cu13==2.28.9``,
2.13.0 line 141 ``nvidia-nccl-cu13==2.29.7``, 2.14.1 line 128 ``nvidia-nccl-cu13==2.30.7``;
torch 2.15.0, which no sglang release pins yet, in ``maint/pins_table.NEWER_TORCH``.

A user who upgrades ``nvidia-nccl-cu13`` or sets ``SGLANG_NCCL_SO_PATH`` runs another
NCCL: the engine always judges the one it actually loaded (``engine.nccl_library``);
this table is what the doctor compares it with, and what the CPU rehearsals judge by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .releases import Release

R = Release.parse


@dataclass(frozen=True)
class Pin:
    first: Release
    last: Release
    torch: str
    nccl: str
    nccl_wheel: str  # the PyPI distribution that carries it

    def covers(self, release: Release) -> bool:
        return self.first <= release <= self.last


PINS = (
    Pin(R("0.5.6"), R("0.5.10"), "2.9.1", "2.27.5", "nvidia-nccl-cu12"),
    Pin(R("0.5.11"), R("0.5.17"), "2.11.0", "2.28.9", "nvidia-nccl-cu13"),
    Pin(R("0.5.18"), R("0.5.21"), "2.13.0", "2.29.7", "nvidia-nccl-cu13"),
    Pin(R("0.5.22"), R("0.5.23"), "2.14.1", "2.30.7", "nvidia-nccl-cu13"),
)


def pin_for(release: Optional[Release]) -> Optional[Pin]:
    """The pins of ``release``, or None for a release outside the table."""
    if release is None:
        return None
    return next((p for p in PINS if p.covers(release)), None)
