"""The NCCL environment parameters that change whether a symmetric kernel can run, and what each does here.

Read in NCCL's source at each tag (``NCCL_PARAM(Name, "X", default)`` is read from ``NCCL_X`` by
``ncclLoadParam``, ``nccl_int`` here: a value NCCL reads as another number than it looks, ``2`` or ``0x0``,
counts as NCCL counts it):

- ``NCCL_WIN_ENABLE`` (default 1; ``src/init.cc`` v2.28.9-1:58): 0 sets ``comm->symmetricSupport``
  false (v2.28.9-1:1376, v2.29.7-1:1475, v2.30.7-1:1674), and ``ncclPrepareTasks`` builds the
  symmetric task list only when it is true (``src/enqueue.cc`` v2.29.7-1:397). So no symmetric
  kernel runs on any communicator: the race cannot occur, and there is nothing to guard.
- ``NCCL_SYM_NOWIN_ENABLE`` (2.29+, default 0; ``src/scheduler/symmetric_sched.cc`` v2.29.7-1:15):
  1 lets an LL symmetric kernel run when neither buffer is in a window (v2.29.7-1:109,
  v2.30.7-1:163: the fallback to legacy kernels is skipped). That defeats the race guard, which
  keeps CP buffers out of windows: the status says so.
- ``NCCL_SYM_KERNEL`` (``src/sym_kernels.cc`` v2.28.9-1:85, v2.29.7-1:108, v2.30.7-1:112): a kernel
  name forces that symmetric kernel (``"^"`` or unset: NCCL chooses). From 2.29 a forced kernel also
  skips the unregistered-buffer fallback (``!forced``, symmetric_sched.cc v2.29.7-1:108), so like
  ``NCCL_SYM_NOWIN_ENABLE=1`` it defeats the guard; on 2.28 it only narrows the choice among
  tasks whose buffers are both registered.
- ``NCCL_ALGO``: the legacy algorithms. In 2.28-2.30 it does not keep symmetric kernels off: it is
  read by name only in ``src/graph/tuning.cc`` and ``src/enqueue.cc`` (v2.30.7-1:458, 2055, 2153),
  never where the symmetric kernel is picked (``docs/nccl-audit.md``). From 2.31 one tuning pass
  chooses both: any non-empty ``NCCL_ALGO`` (or ``NCCL_SYM_KERNEL``) zeroes every symmetric
  kernel's enable (branch dev, 2.31.0a7, ``src/tuning/cost_model.cc:315-317``), and for each
  function the value covers (a list without prefix covers all of them, ``allgather:...`` AllGather
  alone; ``parseList``, cost_model.cc:32-100) only the algorithms it lists and the symmetric kernels
  ``NCCL_SYM_KERNEL`` names stay on (cost_model.cc:350-359). 2.31.2 and 2.32.x carry that parser
  (its string ``NCCL_SYM_KERNEL set by environment to``, cost_model.cc:330, is in their
  ``libnccl.so.2``; the audit). ``algo_effect`` applies the rule to AllGather, the CP all-gather's
  collective: with it, buffers in the pool engage no symmetric kernel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

#: the first NCCL whose single tuning pass lets NCCL_ALGO switch symmetric kernels off (module docstring)
ALGO_RULE_FROM = (2, 31, 0)
#: the first NCCL that runs symmetric kernels on buffers outside windows, where a setting asks (module docstring:
#: ``NCCL_SYM_NOWIN_ENABLE`` is new in 2.29, and ``NCCL_SYM_KERNEL`` skips the fallback from 2.29)
OUTSIDE_WINDOWS_FROM = (2, 29, 0)
#: NCCL's function names (src/init.cc:52 at dev) and legacy algorithms (src/init.cc:53-54)
FUNCTIONS = ("broadcast", "reduce", "allgather", "reducescatter", "allreduce")
ALGORITHMS = ("tree", "ring", "collnetdirect", "collnetchain", "nvls", "nvlstree", "pat")
#: what the verdict is about: the CP all-gather
FUNCTION = "allgather"
@dataclass(frozen=True)
class Effect:
    name: str
    value: str
    effect: str
    symmetric_off: bool = False  # no symmetric kernel anywhere: nothing to guard
    defeats_guard: bool = False  # symmetric kernels on buffers outside windows: the guard cannot hold them
    allgather_off: bool = False  # NCCL 2.31+: no symmetric AllGather kernel (NCCL_ALGO covers AllGather)

    def line(self) -> str:
        return f"{self.name}={self.value[:40]}: {self.effect}"


@dataclass(frozen=True)
class Parameter:
    """One parameter: the values that leave NCCL's default behaviour, and what they do to the verdict.

    ``default``: an integer parameter's default, which NCCL uses as a switch (``ncclParamWinEnable() &&``,
    ``!ncclParamSymNoWinEnable()``): a value is set where ``nccl_int`` reads it as the other side of that switch.
    None: a string parameter, at its default where it is one of ``default_values``."""

    name: str
    default_values: tuple
    when_set: str
    when_default: str
    symmetric_off: bool = False
    defeats_guard: bool = False
    default: Optional[int] = None

    def leaves_default(self, raw: str) -> bool:
        if self.default is not None:
            return bool(nccl_int(raw, self.default)) != bool(self.default)
        return raw.strip() not in self.default_values


#: C's white space (``isspace`` in the "C" locale), which ``strtoll`` skips before the number.
C_SPACE = " \t\n\v\f\r"
INT64 = (-(1 << 63), (1 << 63) - 1)


def nccl_int(raw: Optional[str], default: int) -> int:
    """An integer parameter as NCCL reads it (``ncclLoadParam``, src/misc/param.cc v2.28.9-1:76-94, the same at
    v2.29.7-1:115-131 and v2.30.7-1:85-101): unset or empty, the default; else ``strtoll(str, nullptr, 0)``: white
    space and a sign first, then hexadecimal after ``0x``, octal after ``0``, decimal otherwise, as far as digits
    of that base go (the rest is ignored, so no digit at all reads 0); out of the 64-bit range, the default
    (``errno``). Checked against the C library's own ``strtoll`` (tests/engine/test_nccl_env.py)."""
    if not raw:
        return default
    text = raw.lstrip(C_SPACE)
    sign = -1 if text.startswith("-") else 1
    text = text[1:] if text[:1] in ("+", "-") else text
    if text[:2] in ("0x", "0X") and text[2:3] and text[2:3] in "0123456789abcdefABCDEF":
        base, text = 16, text[2:]
    else:
        base = 8 if text.startswith("0") else 10
    digits = "0123456789abcdef"[:base]
    count = next((i for i, c in enumerate(text) if c.lower() not in digits), len(text))
    significant = text[:count].lstrip("0")
    if len(significant) > 64:  # far out of range (and past what ``int`` converts): the default, as errno gives
        return default
    value = sign * int(significant, base) if significant else 0
    return value if INT64[0] <= value <= INT64[1] else default


#: the parameters read, in the order the doctor shows them (sources in the module docstring)
PARAMETERS = (
    Parameter("NCCL_WIN_ENABLE", (), "symmetric windows and kernels off on every communicator (src/init.cc): "
              "no race, nothing to guard", "windows on (the default)", symmetric_off=True, default=1),
    Parameter("NCCL_SYM_NOWIN_ENABLE", (), "NCCL 2.29+ runs LL symmetric kernels on buffers outside windows: "
              "the race guard cannot keep CP gathers off them; unset it", "off (the default)", defeats_guard=True,
              default=0),
    Parameter("NCCL_SYM_KERNEL", ("", "^"), "forces a symmetric kernel; on NCCL 2.29+ also on buffers outside "
              "windows, which defeats the race guard; unset it", "NCCL chooses (the default)", defeats_guard=True),
    Parameter("NCCL_ALGO", (), "legacy algorithms only; on NCCL 2.31+, where it covers AllGather, AllGather's "
              "symmetric kernels are off unless NCCL_SYM_KERNEL names them (the CP buffers in the pool engage none); "
              "on 2.28-2.30 it does not keep symmetric kernels off", ""),
)


def effects(environ: Optional[Mapping[str, str]] = None, nccl: Optional[Sequence[int]] = None) -> List[Effect]:
    """What each parameter that is set does to the verdict; ``nccl`` (major, minor, patch) where known."""
    env = os.environ if environ is None else environ
    found = []
    for parameter in PARAMETERS:
        raw = env.get(parameter.name)
        if raw is None:
            continue
        value = raw.strip()
        if parameter.name == "NCCL_ALGO":
            found.append(algo_effect(env, nccl))
        elif not parameter.leaves_default(raw):
            found.append(Effect(parameter.name, value, parameter.when_default))
        else:  # an unread NCCL may be 2.29+: the guard is then taken as defeated
            outside = nccl is None or tuple(nccl)[:3] >= OUTSIDE_WINDOWS_FROM
            found.append(Effect(parameter.name, value, parameter.when_set, parameter.symmetric_off,
                                parameter.defeats_guard and outside))
    return found


def parse_list(value: str, function: str,
               known: Optional[Tuple[str, ...]]) -> Tuple[bool, Optional[str], set, Optional[str]]:
    """NCCL's ``parseList`` (cost_model.cc:32-100 at dev), for one function.

    Returns (forced: some element was listed for ``function``; ``"only"``/``"except"``/None: how the last entry
    covering ``function`` reads; the element names it lists, lower case; what NCCL would reject, or None).
    ``known`` None accepts any element name.
    """
    forced, mode, listed, error = False, None, set(), None
    for i, token in enumerate(t for t in value.split(";") if t):
        prefix, colon, elements = token.partition(":")
        if not colon:
            if i:
                return forced, mode, listed, "every entry after the first needs a function prefix"
            prefix, elements = "", token
        if prefix and prefix.lower() not in FUNCTIONS:
            return forced, mode, listed, f"unknown function {prefix[:20]!r}"
        exclude = elements.startswith("^")
        names = [e.lower() for e in (elements[1:] if exclude else elements).split(",") if e]
        unknown = [n for n in names if known is not None and n not in known]
        if unknown:
            return forced, mode, listed, f"unknown element {unknown[0][:20]!r}"
        if prefix and prefix.lower() != function:
            continue
        mode, listed = ("except" if exclude else "only"), set(names)
        forced = forced or bool(names)
    return forced, mode, listed, error


def allgather_kernels_named(value: str) -> bool:
    """Whether ``NCCL_SYM_KERNEL`` turns at least one AllGather symmetric kernel back on.

    An entry covering AllGather that names an ``AllGather_*`` kernel, or excludes some (``^X``: all but X);
    no entry covering AllGather leaves them all off once NCCL_ALGO is set (cost_model.cc:315-317).
    """
    _, mode, listed, _ = parse_list(value, FUNCTION, None)
    if mode == "except":
        return True
    return mode == "only" and any(n.startswith("allgather_") for n in listed)


def algo_effect(env: Mapping[str, str], nccl: Optional[Sequence[int]]) -> Effect:
    value = (env.get("NCCL_ALGO") or "").strip()
    covered, _, _, error = parse_list(value, FUNCTION, ALGORITHMS) if value else (False, None, set(), None)
    if error:
        return Effect("NCCL_ALGO", value, f"NCCL rejects this value ({error}): communicators fail to start")
    if not value:
        return Effect("NCCL_ALGO", value, "empty: NCCL's default choice")
    rule_applies = nccl is not None and tuple(nccl)[:3] >= ALGO_RULE_FROM
    kernels = (env.get("NCCL_SYM_KERNEL") or "").strip()
    if rule_applies and covered and not (kernels and allgather_kernels_named(kernels)):
        return Effect("NCCL_ALGO", value, "legacy algorithms only for AllGather: on this NCCL (2.31+) AllGather has "
                      "no symmetric kernel, so CP buffers in the pool engage none; name them in NCCL_SYM_KERNEL "
                      "or unset NCCL_ALGO", allgather_off=True)
    if rule_applies:
        why = ("NCCL_SYM_KERNEL names AllGather kernels, which stay on" if covered
               else "it does not cover AllGather, whose symmetric kernels stay on")
        return Effect("NCCL_ALGO", value, f"legacy algorithms of the functions it covers; {why}")
    if nccl is not None:
        return Effect("NCCL_ALGO", value, "legacy algorithms only; does not keep symmetric kernels off on 2.28-2.30")
    return Effect("NCCL_ALGO", value, PARAMETERS[-1].when_set)


def settings_that(found: Sequence[Effect], flag: str) -> Optional[str]:
    """The settings among ``found`` (``effects``) that have ``flag`` as one line, or None: ``"symmetric_off"``
    (every symmetric kernel off: nothing to guard) or ``"defeats_guard"`` (symmetric kernels outside windows:
    the guard cannot hold). What the plan hands the race guard."""
    return "; ".join(e.line() for e in found if getattr(e, flag)) or None
