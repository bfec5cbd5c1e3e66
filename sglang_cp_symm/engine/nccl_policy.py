"""Which NCCL is loaded, and what that means for the CP all-gather's symmetric kernel.

The table below is the policy: for each NCCL line, which buffers must lie in
symmetric windows before NCCL picks a symmetric AllGather kernel, and whether
those kernels carry the known race. Each row names its source. Facts were read
in NCCL's source and release notes and in the public threads cited; where a row
is an inference, it says so.

The race: symmetric collectives are launched with programmatic stream
serialization on sm90+ (``src/enqueue.cc``: ``plan->isSymColl && compCap >= 90``,
v2.27.7-1 and v2.28.9-1), so a kernel may start before its producer finishes and
must call ``cudaGridDependencySynchronize()`` before reading its input. The 2.28
DeviceAPI rewrite dropped that call; 2.30.7 restored it (NCCL commit 2948185,
"Reintroduce cudaGridDependencySynchronize in built-in symmetric kernels. The
call was accidentally left out when transitioning to DeviceAPI in NCCL 2.28",
quoted in ROCm/rocm-systems PR #10829, the 2.30.7 sync). sglang PR #37768
measured the symptom (GSM8K 0.10 with symmetric memory, decode CP, CUDA graphs,
NCCL 2.29.7).

Releases without a source tag (2.31, 2.32: NCCL's public repository stops at
v2.30.7-1) are verified from their published binaries by ``maint/nccl_audit.py``,
whose record is ``docs/nccl-audit.md``: the race fix is read in the sm_90 machine
code of every symmetric kernel, and the registration rule on NCCL's ``dev``
branch, said as such. A release neither read at a tag nor audited stays
"unverified", and the plugin engages nothing of its own there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

from ..pins import pin_for
from ..releases import Release

#: How NCCL encodes its version code (``NCCL_VERSION_CODE``, what ``ncclGetVersion`` writes: src/init.cc:176-180 at
#: v2.30.7-1). Up to 2.8 it is X*1000 + Y*100 + Z (v2.8.4-1 src/nccl.h.in:19 ``NCCL_VERSION(X,Y,Z)``, and
#: src/Makefile:60 ``printf "%d%d%02d"``: 2.8.4 is 2804); from 2.9 it is X*10000 + Y*100 + Z (v2.9.6-1
#: src/nccl.h.in:19 and src/Makefile:60 ``"%d%02d%02d"``). v2.30.7-1 src/nccl.h.in:26 keeps both in one macro:
#: ``((X) <= 2 && (Y) <= 8) ? (X)*1000 + (Y)*100 + (Z) : (X)*10000 + (Y)*100 + (Z)``. So a code below 10000 is
#: the old encoding (2.0.0-2.8.99 are 2000-2899) and one from 10000 the new; the two ranges never overlap.
NEW_ENCODING_FROM = 10000

#: A plausible released NCCL (``implausible``): major 2, minor at most this, patch at most ``PLAUSIBLE_PATCH``.
#: Why these bounds: every NCCL release is 2.x (tags v2.3.5-5 to v2.30.7-1; PyPI's newest 2.32.6, 2026-12-06);
#: NCCL has published about four minors a year (2.18 in 2023, 2.30 in 2026), so a minor above 49 is many years
#: past any NCCL that exists and is far likelier an unset integer or another library's own scheme than NCCL.
#: The highest patch of any tag is 12 (v2.12.12-1); 49 leaves room for more. Unknown only holds back (the
#: plugin engages nothing and the race guard holds), so a bound that is too tight costs speed, never correctness.
PLAUSIBLE_MINOR = 49
PLAUSIBLE_PATCH = 49

_DOTTED = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})\.([0-9]{1,9})", re.ASCII)  # [0-9], never \d (Unicode digits)


class NcclVersion(NamedTuple):
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, value) -> "NcclVersion":
        """Accept ``(2, 28, 9)`` (torch's ``nccl.version()``, a 4th suffix item ignored), ``"2.28.9"`` or NCCL's
        integer code (22809 = 2.28.9, 2804 = 2.8.4: ``from_code``). Exact, never judged: ``implausible`` judges.

        Raises only ``ValueError``, with one line that shows at most a short prefix of ``value``.
        """
        if isinstance(value, int) and not isinstance(value, bool):
            return cls.from_code(value)
        if isinstance(value, str):
            match = _DOTTED.fullmatch(value.strip())
            if not match:
                raise ValueError(f"cannot read an NCCL version from {value[:20]!r} (expected e.g. 2.28.9)")
            return cls(*(int(p) for p in match.groups()))
        if isinstance(value, (tuple, list)) and len(value) >= 3 and all(
                isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in value[:3]):
            return cls(*value[:3])
        raise ValueError(f"cannot read an NCCL version from a {type(value).__name__} "
                         "(expected 2.28.9, (2, 28, 9) or NCCL's code 22809)")

    @classmethod
    def from_code(cls, code: int) -> "NcclVersion":
        """Decode ``ncclGetVersion``'s integer exactly as NCCL encodes it (``NEW_ENCODING_FROM``); ValueError
        for a negative code or a non-integer. Whether the result is a real NCCL is ``code_problem``'s question."""
        if isinstance(code, bool) or not isinstance(code, int):
            raise ValueError(f"an NCCL version code is a whole number, not a {type(code).__name__}")
        if code < 0:
            raise ValueError("a negative number is no NCCL version code")
        if code < NEW_ENCODING_FROM:
            return cls(code // 1000, code % 1000 // 100, code % 100)
        return cls(code // 10000, code % 10000 // 100, code % 100)

    def code(self) -> int:
        """NCCL's own ``NCCL_VERSION(X,Y,Z)`` of this version (v2.30.7-1 src/nccl.h.in:26)."""
        old = self.major <= 2 and self.minor <= 8
        return self.major * (1000 if old else 10000) + self.minor * 100 + self.patch

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def _short_int(value: int) -> str:
    """An integer for a message: in full up to 20 digits, else its size (str() of a huge int can raise)."""
    return str(value) if value.bit_length() <= 64 else f"a {value.bit_length()}-bit number"


def implausible(version: NcclVersion) -> Optional[str]:
    """Why ``version`` is not a plausible released NCCL, or None when it is (bounds and reasons at
    ``PLAUSIBLE_MINOR``). The policy judges only plausible versions; anything else is unknown: hold back."""
    if version.major != 2:
        return f"major {_short_int(version.major)}, and every NCCL release is 2.x"
    if version.minor > PLAUSIBLE_MINOR:
        return f"minor {_short_int(version.minor)} is years past any NCCL; at most 2.{PLAUSIBLE_MINOR} is believed"
    if version.patch > PLAUSIBLE_PATCH:
        return (f"patch {_short_int(version.patch)}, and no NCCL has had a patch above 12; at most {PLAUSIBLE_PATCH} "
                "is believed")
    return None


def code_problem(code) -> Tuple[Optional[NcclVersion], Optional[str]]:
    """(version, None) when ``code`` is what a plausible released NCCL's ``ncclGetVersion`` writes; else
    (None, why). Never raises. A code that decodes but is not NCCL's own encoding of the result (20804: NCCL
    2.8.4 writes 2804; 2950: 2.9 uses the new encoding) is no NCCL's code either."""
    try:
        version = NcclVersion.from_code(code)
    except ValueError as exc:
        return None, str(exc)
    problem = implausible(version)
    if problem:
        return None, f"it decodes to {_short_version(version)}, not a released NCCL: {problem}"
    if version.code() != code:
        return None, (f"it decodes to {_short_version(version)}, which NCCL writes as {_short_int(version.code())}: "
                      "not NCCL's own encoding")
    return version, None


def _short_version(version: NcclVersion) -> str:
    return ".".join(_short_int(part) for part in version)


def given_version(text) -> NcclVersion:
    """A version the user names (``doctor --nccl``, ``demo --as-nccl``, ``patch(nccl=...)``): read and judged
    plausible, else ValueError with one line saying what was wrong and how to write it."""
    version = NcclVersion.parse(text)
    problem = implausible(version)
    if problem:
        raise ValueError(f"{str(text)[:20]!r} is not a released NCCL: {problem}; name one like 2.30.7")
    return version


V = NcclVersion.parse


@dataclass(frozen=True)
class NcclLine:
    """One row of the policy table."""

    first: NcclVersion
    last: NcclVersion
    window_api: bool  # ncclCommWindowRegister exists
    needs_send_registered: bool  # AllGather's symmetric kernel needs the send buffer in a window too
    race: bool  # symmetric kernels can read their input early on sm90+
    source: str
    note: str = ""

    def covers(self, version: NcclVersion) -> bool:
        return self.first <= version <= self.last


LAST = V("99.99.99")

TABLE: Tuple[NcclLine, ...] = (
    NcclLine(V("0.0.0"), V("2.27.2"), False, False, False,
             "NCCL 2.27.3 release notes: ncclCommWindowRegister and symmetric kernels are new in 2.27.3"),
    NcclLine(V("2.27.3"), V("2.27.99"), True, True, False,
             "src/scheduler/symmetric_sched.cc (v2.27.x): symmetric only if task->sendWin && task->recvWin "
             "&& both carry NCCL_WIN_COLL_SYMMETRIC; 2.27 kernels call cudaGridDependencySynchronize "
             "(src/device/symmetric/primitives.cuh)"),
    NcclLine(V("2.28.0"), V("2.28.99"), True, True, True,
             "src/scheduler/symmetric_sched.cc at v2.28.9-1: same both-windows rule; sglang PR #37337 measured "
             "0 symmetric vs 499 ring with the output alone registered; race: NCCL commit 2948185 (2.30.7)"),
    NcclLine(V("2.29.0"), V("2.29.1"), True, True, True,
             "inference: no source read for 2.29.0-2.29.1; treated like 2.28 (both windows) to stay on the "
             "side of not engaging; race: NCCL commit 2948185", note="unverified"),
    NcclLine(V("2.29.2"), V("2.30.6"), True, False, True,
             "src/sym_kernels.cc at v2.29.2-1 (ncclSymkPickKernel): for AllGather a registered receive buffer "
             "alone keeps the full kernel set; race: NCCL commit 2948185 (fixed in 2.30.7); 2.29.7 also has a "
             "Hopper symmetric-kernel slowdown (reported, NCCL issue #2058)"),
    NcclLine(V("2.30.7"), V("2.30.99"), True, False, False,
             "v2.30.7-1: src/device/symmetric/generate.py:176-178 emits cudaGridDependencySynchronize() first in "
             "every symmetric kernel (commit 2948185); src/sym_kernels.cc:610-612 receive buffer alone keeps the "
             "full AllGather set; src/enqueue.cc:1816-1817 programmatic serialization still on sm90+"),
    NcclLine(V("2.31.0"), V("2.31.2"), True, False, False,
             "docs/nccl-audit.md (nvidia-nccl-cu13 2.31.2, the only 2.31 on PyPI): all 164 sm_90 "
             "ncclSymkDevKernel_* carry ACQBULK (cudaGridDependencySynchronize); no release tag, so the rules are "
             "read on NCCL's branch dev (2.31.0a7): receive alone keeps AllGather's full kernel set "
             "(src/tuning/sym_model.cc:304-305), and any NCCL_ALGO covering AllGather turns its symmetric kernels "
             "off unless NCCL_SYM_KERNEL names them (src/tuning/cost_model.cc:315-317, 350-359; engine.nccl_env)"),
    NcclLine(V("2.31.3"), V("2.31.99"), True, False, False, "no audit of this 2.31 release (docs/nccl-audit.md)",
             note="unverified"),
    NcclLine(V("2.32.0"), V("2.32.6"), True, False, False,
             "docs/nccl-audit.md (nvidia-nccl-cu13 2.32.3 and 2.32.6, the 2.32 releases on PyPI): every sm_90 "
             "ncclSymkDevKernel_* carries ACQBULK; no release tag, so the rules are read on branch dev (2.31.0a7, "
             "older than 2.32): receive alone (src/tuning/sym_model.cc:304-305), NCCL_ALGO covering AllGather turns "
             "its symmetric kernels off (src/tuning/cost_model.cc:315-317, 350-359); the binary carries the same "
             "NCCL_SYM_KERNEL/NCCL_ALGO parser (its string at cost_model.cc:330)"),
    NcclLine(V("2.32.7"), LAST, True, False, False,
             "newer than this table: run 'python -m maint.nccl_audit VERSION' and add its row", note="unverified"),
)

#: the newest line read in NCCL's source at a release tag
NEWEST_TAGGED = V("2.30.99")
#: the newest NCCL verified (in its source at a tag, or by docs/nccl-audit.md); above it, and on an "unverified"
#: row above NEWEST_TAGGED, the plugin engages nothing of its own
NEWEST_VERIFIED = V("2.32.6")

SAFE_UPGRADE = "2.30.7"
SLOW_ON_HOPPER = V("2.29.7")


def upgrade_command(release: Optional[Release]) -> str:
    """The exact command that puts NCCL >= ``SAFE_UPGRADE`` under ``release``'s torch (its NCCL wheel: ``pins``)."""
    pin = pin_for(release)
    wheel = pin.nccl_wheel if pin is not None else "nvidia-nccl-cu13"
    return (f'pip install "{wheel}>={SAFE_UPGRADE}" (or a torch that pins NCCL >= {SAFE_UPGRADE}), or '
            f"SGLANG_NCCL_SO_PATH=<libnccl.so.2 of NCCL >= {SAFE_UPGRADE}>")


def line_for(version: NcclVersion) -> NcclLine:
    for line in TABLE:
        if line.covers(version):
            return line
    raise ValueError(f"no policy row covers NCCL {version}")  # pragma: no cover - the table is total


@dataclass(frozen=True)
class Decision:
    """What the plugin does with this NCCL, and the one line it logs about it."""

    nccl: Optional[NcclVersion]
    patch_outputs: bool  # move output buffers into the symmetric pool
    stage_send: bool  # also stage the send buffer in the pool
    kernel_engaged: Optional[bool]  # with what the plugin does, will NCCL pick the symmetric kernel
    hazard: Optional[str]
    reason: str
    recommendation: Optional[str]
    source: str

    def line(self) -> str:
        parts = [f"NCCL {self.nccl or 'unknown'}: outputs {'patched' if self.patch_outputs else 'held back'}, "
                 f"send staging {'on' if self.stage_send else 'off'}; {self.reason}"]
        if self.hazard:
            parts.append(f"hazard: {self.hazard}")
        if self.recommendation:
            parts.append(f"recommended: {self.recommendation}")
        return " | ".join(parts)


def decide(nccl: Optional[NcclVersion], send_requested: bool, allow_race: bool, sm90_or_later: bool = True) -> Decision:
    """The policy for one process. ``sm90_or_later`` False only where the GPU is known to be older than Hopper."""
    if nccl is None:
        return Decision(None, False, False, None, None,
                        "the NCCL the engine loads could not be established, so nothing that could engage a "
                        "symmetric kernel is changed",
                        "make the engine's libnccl readable (SGLANG_NCCL_SO_PATH names it) or run "
                        "'sglang-cp-symm doctor' to see which one is loaded", "NCCL unknown")
    line = line_for(nccl)
    if nccl > NEWEST_VERIFIED or (nccl > NEWEST_TAGGED and line.note == "unverified"):
        return Decision(nccl, False, False, None, None,
                        f"NCCL {nccl} is not among the releases verified (NCCL's source up to 2.30.x, the audit of "
                        f"the binaries up to {NEWEST_VERIFIED}; {line.source}): "
                        "unverified, so the plugin engages nothing of its own; upstream's registrations run as "
                        "sglang wrote them",
                        "update sglang-cp-symm to a release that verified this NCCL, or pin NCCL 2.30.7",
                        line.source)
    racy = line.race and sm90_or_later
    hazard = (f"NCCL {nccl} symmetric kernels can read their input before it is written on sm90+ (Hopper and "
              f"Blackwell; 2.28.0-2.30.6, fixed in {SAFE_UPGRADE})") if racy else None
    if hazard and nccl == SLOW_ON_HOPPER:
        hazard += f"; {SLOW_ON_HOPPER} also has a Hopper symmetric-kernel slowdown (reported, NCCL issue #2058)"
    if not line.window_api:
        return Decision(nccl, False, False, False, None,
                        "this NCCL has no symmetric windows, so there is nothing to register",
                        f"NCCL >= {SAFE_UPGRADE} for symmetric kernels", line.source)
    if racy and not line.needs_send_registered and not allow_race:
        return Decision(nccl, False, False, False, hazard,
                        "registering the output alone would engage the racy symmetric kernel; outputs held back "
                        "(SGLANG_CP_SYMM_ALLOW_NCCL_RACE=1 accepts the risk)",
                        f"NCCL >= {SAFE_UPGRADE}", line.source)
    if not line.needs_send_registered:
        return Decision(nccl, True, False, True, hazard,
                        "the output alone selects the symmetric kernel; send staging is not needed",
                        None if not racy else f"NCCL >= {SAFE_UPGRADE}", line.source)
    # This NCCL needs the send buffer registered too.
    if not send_requested:
        return Decision(nccl, True, False, False, hazard,
                        "this NCCL picks the symmetric kernel only if the send buffer is registered too; "
                        "send staging is off (SGLANG_CP_SYMM_SEND=1 turns it on)",
                        f"NCCL >= {SAFE_UPGRADE}" if racy else "SGLANG_CP_SYMM_SEND=1", line.source)
    if racy and not allow_race:
        return Decision(nccl, True, False, False, hazard,
                        "send staging would engage the racy symmetric kernel; not staged "
                        "(SGLANG_CP_SYMM_ALLOW_NCCL_RACE=1 accepts the risk)",
                        f"NCCL >= {SAFE_UPGRADE}", line.source)
    return Decision(nccl, True, True, True, hazard,
                    "send and receive buffers both in symmetric windows: NCCL can pick its symmetric kernel",
                    f"NCCL >= {SAFE_UPGRADE}" if racy else None, line.source)
