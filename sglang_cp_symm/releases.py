"""Which sglang is installed, read without importing it.

The plugin runs in every process sglang starts, so finding the release must cost
no more than reading package metadata: importing ``sglang`` here would pull in
torch and most of the engine before the user asked for anything.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import NamedTuple, Optional

_RELEASE = re.compile(r"^\s*v?(\d+)\.(\d+)\.(\d+)")


class Release(NamedTuple):
    """A release as (major, minor, patch); post and dev suffixes do not change code paths we patch."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> "Release":
        match = _RELEASE.match(text)
        if not match:
            raise ValueError(f"cannot read a release number from {text!r}")
        return cls(*(int(part) for part in match.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def distribution_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_sglang_version() -> Optional[str]:
    """The installed sglang's version string as its metadata gives it (``0.5.10.post1``), or None."""
    return distribution_version("sglang")


def installed_sglang() -> Optional[Release]:
    """The installed sglang release, or None when sglang is not installed."""
    version = distribution_version("sglang")
    return None if version is None else Release.parse(version)
