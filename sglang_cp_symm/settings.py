"""The environment switches of sglang-cp-symm, parsed once, with their errors.

Every switch is read from the environment so that it reaches each process sglang
spawns (scheduler, detokenizer, DP controller) without any change to the engine's
command line. A value that cannot be understood never turns a feature on: it is
reported once, with the variable's name and the values it accepts, and the
feature stays off (strict mode turns the report into an error).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

ENABLE = "SGLANG_CP_SYMM"
STRICT = "SGLANG_CP_SYMM_STRICT"
SEND = "SGLANG_CP_SYMM_SEND"
ALLOW_NCCL_RACE = "SGLANG_CP_SYMM_ALLOW_NCCL_RACE"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
ACCEPTED = "1/true/yes/on to turn it on; 0/false/no/off or unset to leave it off"


class SettingsError(ValueError):
    """A switch had a value that strict mode refuses to guess about."""


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    strict: bool = False
    send: bool = False  # stage the all-gather's send buffer too, where the NCCL policy allows
    allow_nccl_race: bool = False  # engage symmetric kernels even on NCCL 2.28.0-2.30.6 (Hopper race)
    problems: tuple[str, ...] = field(default=())

    def describe(self) -> dict:
        return {"enabled": self.enabled, "strict": self.strict, "send": self.send,
                "allow_nccl_race": self.allow_nccl_race, "problems": list(self.problems)}


def _flag(environ: Mapping[str, str], name: str, problems: list[str]) -> bool:
    raw = environ.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value not in _FALSE:
        problems.append(f"{name}={raw!r} is not understood; accepted: {ACCEPTED}. Treating it as off.")
    return False


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse the switches from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    enabled = _flag(env, ENABLE, problems)
    strict = _flag(env, STRICT, problems)
    send = _flag(env, SEND, problems)
    allow_race = _flag(env, ALLOW_NCCL_RACE, problems)
    return Settings(enabled=enabled, strict=strict, send=send, allow_nccl_race=allow_race, problems=tuple(problems))
