"""Which sglang is installed, read without importing it.

The plugin runs in every process sglang starts, so finding the release must cost
no more than reading package metadata: importing ``sglang`` here would pull in
torch and most of the engine before the user asked for anything.

Metadata can hold any string: a final release (``0.5.11``), a post release
(``0.5.10.post1``, sglang publishes them), a pre-release or a development build
(``0.5.12rc1``, ``0.5.12.dev3``), a vendor's local build (``0.5.11+corp.2``), or
something that is no version at all. ``installed_build`` reads each exactly
(PEP 440's public and local parts) and says which it is: only a final build
is the code the register describes; for any other the installed source must
decide, since the number alone does not say whether a fix is in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import NamedTuple, Optional

#: Digits are [0-9] and the flags ASCII throughout: ``\d`` and case-folding would let Unicode digits and letters
#: (``١``, the Kelvin sign) through, which no installer writes and ``int`` would read differently.
_PREFIX = re.compile(r"\s*v?([0-9]{1,64})\.([0-9]{1,64})\.([0-9]{1,64})", re.ASCII)
_VERSION = re.compile(r"""
    v?(?:(?P<epoch>[0-9]{1,64})!)?
    (?P<release>[0-9]{1,64}(?:\.[0-9]{1,64})*)
    (?P<pre>[-_.]?(?:alpha|beta|preview|pre|rc|a|b|c)[-_.]?[0-9]{0,64})?
    (?P<post>-[0-9]{1,64}|[-_.]?(?:post|rev|r)[-_.]?[0-9]{0,64})?
    (?P<dev>[-_.]?dev[-_.]?[0-9]{0,64})?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
""", re.VERBOSE | re.IGNORECASE | re.ASCII)
#: Longer than any version an installer writes; such a string is not read at all.
LONGEST = 256


class Release(NamedTuple):
    """A release as (major, minor, patch): what the register, the pins and every comparison in the code use."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> "Release":
        """The leading X.Y.Z of ``text`` (``0.5.10.post1`` gives 0.5.10); ValueError, with a short prefix of the
        text, when it starts with none. For what metadata holds, use ``read_build``: it says what follows."""
        match = _PREFIX.match(text) if isinstance(text, str) else None
        if not match:
            raise ValueError(f"cannot read a release number from {str(text)[:40]!r}")
        return cls(*(int(part) for part in match.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class Build:
    """One installed sglang as its metadata names it.

    ``release`` is None when the string is no version (``problem`` says why, in one line); ``final`` is True
    only for a plain X.Y.Z; ``kind`` names what else it is: "final", or the parts that make it not final,
    e.g. "post", "dev", "pre-release", "local +corp.2", "epoch", "not X.Y.Z".
    """

    raw: str
    release: Optional[Release]
    final: bool
    kind: str
    problem: Optional[str] = None

    @property
    def shown(self) -> str:
        """The raw string for a message: at most 40 characters, anything unprintable escaped."""
        head = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in self.raw[:40])
        return head + ("..." if len(self.raw) > 40 else "")


def read_build(raw: str) -> Build:
    """Read a version string as metadata holds it. Never raises."""
    if not isinstance(raw, str):  # metadata without a Version field gives None
        return Build("", None, False, "unreadable", "sglang's metadata has no version: reinstall sglang")
    build = Build(raw, None, False, "unreadable")
    if len(raw) > LONGEST:
        return _unreadable(build, f"is {len(raw)} characters long")
    match = _VERSION.fullmatch(raw.strip())
    if not match:
        return _unreadable(build, "is not a version (PEP 440)")
    parts = [int(p) for p in match["release"].split(".")]
    kinds = []
    if match["epoch"] and int(match["epoch"]):
        kinds.append("epoch")
    if len(parts) != 3:
        kinds.append("not X.Y.Z")
    if match["pre"]:
        kinds.append("pre-release")
    if match["post"]:
        kinds.append("post")
    if match["dev"]:
        kinds.append("dev")
    if match["local"]:
        kinds.append(f"local +{match['local'][:20]}")
    release = Release(*(parts + [0, 0])[:3])
    return Build(raw, release, not kinds, ", ".join(kinds) or "final")


def _unreadable(build: Build, why: str) -> Build:
    return Build(build.raw, None, False, "unreadable",
                 f"sglang's version '{build.shown}' {why}, so the plugin cannot tell which release this is and "
                 "changes nothing: reinstall sglang from a release")


def distribution_version(name: str) -> Optional[str]:
    """``name``'s version string from its metadata, or None when it is not installed or its metadata cannot be
    read (a broken or half-removed install). Never raises."""
    try:
        return metadata.version(name)
    except Exception:
        return None


def installed_build() -> Optional[Build]:
    """The installed sglang as its metadata names it, or None when sglang is not installed. Never raises.

    Metadata that is there but unreadable (no Version field, bytes that are not UTF-8) is a build with a problem,
    never "not installed".
    """
    try:
        raw = metadata.distribution("sglang").version
    except metadata.PackageNotFoundError:
        return None
    except Exception as exc:
        return Build("", None, False, "unreadable",
                     f"sglang's metadata cannot be read ({type(exc).__name__}): reinstall sglang")
    return read_build(raw)


def installed_sglang() -> Optional[Release]:
    """The installed sglang release, or None when sglang is not installed or its version cannot be read
    (``installed_build`` tells the two apart). Never raises."""
    build = installed_build()
    return None if build is None else build.release
