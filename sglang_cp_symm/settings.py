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
from typing import Mapping, Optional

ENABLE = "SGLANG_CP_SYMM"
STRICT = "SGLANG_CP_SYMM_STRICT"
SEND = "SGLANG_CP_SYMM_SEND"
ALLOW_NCCL_RACE = "SGLANG_CP_SYMM_ALLOW_NCCL_RACE"
WARMUP = "SGLANG_CP_SYMM_WARMUP"
WARMUP_TOKENS = "SGLANG_CP_SYMM_WARMUP_TOKENS"
WATCHDOG = "SGLANG_CP_SYMM_WATCHDOG"
REPORT_DIR = "SGLANG_CP_SYMM_REPORT_DIR"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
ACCEPTED = "1/true/yes/on to turn it on; 0/false/no/off to turn it off"


class SettingsError(ValueError):
    """A switch had a value that strict mode refuses to guess about."""


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    strict: bool = False
    send: bool = False  # stage the all-gather's send buffer too, where the NCCL policy allows
    allow_nccl_race: bool = False  # engage symmetric kernels even on NCCL 2.28.0-2.30.6 (Hopper race)
    warmup: bool = True  # one maximum-token prefill per DP rank before the server reports ready
    warmup_tokens: Optional[int] = None  # None: the largest extend the server can schedule
    watchdog: bool = True  # count and log every symmetric-pool growth, per rank
    problems: tuple[str, ...] = field(default=())

    def describe(self) -> dict:
        return {"enabled": self.enabled, "strict": self.strict, "send": self.send,
                "allow_nccl_race": self.allow_nccl_race, "warmup": self.warmup,
                "warmup_tokens": self.warmup_tokens, "watchdog": self.watchdog, "problems": list(self.problems)}


def _flag(environ: Mapping[str, str], name: str, problems: list[str], default: bool = False) -> bool:
    """A yes/no switch; unset or empty gives ``default``, and so does a value that is not understood."""
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    problems.append(f"{name}={raw!r} is not understood; accepted: {ACCEPTED}. "
                    f"Keeping its default ({'on' if default else 'off'}).")
    return default


def _positive_int(environ: Mapping[str, str], name: str, problems: list[str]) -> Optional[int]:
    """A token count: unset, empty or ``auto`` means None (computed from the server's arguments)."""
    raw = environ.get(name)
    if raw is None or raw.strip().lower() in ("", "auto"):
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value > 0:
        return value
    problems.append(f"{name}={raw!r} is not a positive whole number of tokens (or 'auto'). "
                    "Using the server's largest extend length instead.")
    return None


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse the switches from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    enabled = _flag(env, ENABLE, problems)
    strict = _flag(env, STRICT, problems)
    send = _flag(env, SEND, problems)
    allow_race = _flag(env, ALLOW_NCCL_RACE, problems)
    warmup = _flag(env, WARMUP, problems, default=True)
    warmup_tokens = _positive_int(env, WARMUP_TOKENS, problems)
    watchdog = _flag(env, WATCHDOG, problems, default=True)
    return Settings(enabled=enabled, strict=strict, send=send, allow_nccl_race=allow_race, warmup=warmup,
                    warmup_tokens=warmup_tokens, watchdog=watchdog, problems=tuple(problems))
