"""The environment switches of sglang-cp-symm, parsed once, with their errors.

Every switch is read from the environment so that it reaches each process sglang
spawns (scheduler, detokenizer, DP controller) without any change to the engine's
command line. A value that cannot be understood never turns a feature on: it is
reported once, with the variable's name, a short prefix of the value and the
values it accepts, and the feature keeps its default (strict mode turns the report
into a refusal to start the engine).

The command line, the doctor and the engine all call ``read_settings``, so they
cannot disagree on whether the plugin is on. The settings a process was patched
with (``patch()`` may be given its own) are kept by the plugin object
(``activation.Plugin.settings``), so that the warm-up reads the same switches as
the patches it belongs to.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

ENABLE = "SGLANG_CP_SYMM"
STRICT = "SGLANG_CP_SYMM_STRICT"
SEND = "SGLANG_CP_SYMM_SEND"
ALLOW_NCCL_RACE = "SGLANG_CP_SYMM_ALLOW_NCCL_RACE"
WARMUP = "SGLANG_CP_SYMM_WARMUP"
WARMUP_TOKENS = "SGLANG_CP_SYMM_WARMUP_TOKENS"
WARMUP_TIMEOUT = "SGLANG_CP_SYMM_WARMUP_TIMEOUT"
WATCHDOG = "SGLANG_CP_SYMM_WATCHDOG"
REPORT_DIR = "SGLANG_CP_SYMM_REPORT_DIR"

#: The values ``SGLANG_CP_SYMM`` may take to mean "off"; the ``.pth`` line repeats this set (it may import nothing).
OFF_VALUES = ("", "0", "false", "no", "off")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset(OFF_VALUES)
ACCEPTED = "1/true/yes/on to turn it on; 0/false/no/off to turn it off"
#: The longest warm-up prompt accepted: 2**24 tokens, above the longest context any published model has (10M).
MAX_WARMUP_TOKENS = 1 << 24
#: The longest warm-up deadline accepted, in seconds (a day).
MAX_WARMUP_TIMEOUT_S = 86_400
#: At most this much of a rejected value is repeated in a message.
ECHO_CHARS = 60


class StrictModeError(RuntimeError):
    """Raised instead of a 'skipped' status when SGLANG_CP_SYMM_STRICT=1."""


def strict_exit(cause: str) -> SystemExit:
    """The one line strict mode stops the engine with (exit status 1): never a traceback."""
    return SystemExit(f"sglang-cp-symm strict mode: {cause} (unset {STRICT} to start anyway)")


def shown(raw: str) -> str:
    """A rejected value as a message repeats it: quoted, at most ``ECHO_CHARS`` characters, no control characters."""
    clean = "".join(c if c.isprintable() else "?" for c in raw[:ECHO_CHARS])
    return repr(clean) + ("..." if len(raw) > ECHO_CHARS else "")


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    strict: bool = False
    send: bool = False  # stage the all-gather's send buffer too, where the NCCL policy allows
    allow_nccl_race: bool = False  # engage symmetric kernels even on NCCL 2.28.0-2.30.6 (Hopper race)
    warmup: bool = True  # one maximum-token prefill per DP rank before the server reports ready
    warmup_tokens: Optional[int] = None  # None: the largest extend the server can schedule
    warmup_timeout_s: Optional[int] = None  # None: derived from the server's own timeouts
    watchdog: bool = True  # count and log every symmetric-pool growth, per rank
    report_dir: str = ""  # where each rank writes its record (checked: exists or can be made, writable)
    problems: tuple[str, ...] = field(default=())

    def describe(self) -> dict:
        return {**asdict(self), "problems": list(self.problems)}


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
    problems.append(f"{name}={shown(raw)} is not understood; accepted: {ACCEPTED}. "
                    f"Keeping its default ({'on' if default else 'off'}).")
    return default


def _whole_number(environ: Mapping[str, str], name: str, problems: list[str], upper: int, unit: str,
                  fallback: str) -> Optional[int]:
    """A positive whole number of ASCII digits, at most ``upper``; unset, empty or ``auto`` give None."""
    raw = environ.get(name)
    if raw is None or raw.strip().lower() in ("", "auto"):
        return None
    text = raw.strip()
    # str.isdigit() accepts other scripts' digits and superscripts; int() accepts "1_000": neither is a count.
    if text.isascii() and text.isdigit() and 0 < int(text) <= upper:
        return int(text)
    problems.append(f"{name}={shown(raw)} is not a whole number of {unit} from 1 to {upper} (or 'auto'). "
                    f"{fallback}")
    return None


def default_report_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "sglang-cp-symm")


def _report_dir(environ: Mapping[str, str], problems: list[str]) -> str:
    """``SGLANG_CP_SYMM_REPORT_DIR`` if it is a folder that exists or can be made and that this user may write."""
    raw = environ.get(REPORT_DIR)
    if raw is None or not raw.strip():
        return default_report_dir()
    path = os.path.abspath(os.path.expanduser(raw.strip()))
    probe = path
    while not os.path.exists(probe):  # the nearest existing folder decides whether it can be made
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK):
        return path
    why = "is not a folder" if os.path.exists(probe) and probe == path else "cannot be made or written by this user"
    problems.append(f"{REPORT_DIR}={shown(raw)} {why}; using {default_report_dir()} instead.")
    return default_report_dir()


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse the switches from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    enabled = _flag(env, ENABLE, problems)
    strict = _flag(env, STRICT, problems)
    send = _flag(env, SEND, problems)
    allow_race = _flag(env, ALLOW_NCCL_RACE, problems)
    warmup = _flag(env, WARMUP, problems, default=True)
    warmup_tokens = _whole_number(env, WARMUP_TOKENS, problems, MAX_WARMUP_TOKENS, "tokens",
                                  "Using the server's largest forward instead.")
    warmup_timeout = _whole_number(env, WARMUP_TIMEOUT, problems, MAX_WARMUP_TIMEOUT_S, "seconds",
                                   "Using the deadline derived from the server's own timeouts.")
    watchdog = _flag(env, WATCHDOG, problems, default=True)
    report_dir = _report_dir(env, problems)
    return Settings(enabled=enabled, strict=strict, send=send, allow_nccl_race=allow_race, warmup=warmup,
                    warmup_tokens=warmup_tokens, warmup_timeout_s=warmup_timeout, watchdog=watchdog,
                    report_dir=report_dir, problems=tuple(problems))

