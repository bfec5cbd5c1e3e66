"""The NCCL environment parameters that change whether a symmetric kernel can run, and what each does here.

Read in NCCL's source at each tag (``NCCL_PARAM(Name, "X", default)`` is read from ``NCCL_X``):

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
- ``NCCL_ALGO``: the legacy algorithms. In 2.29-2.30 it does not keep symmetric kernels off
  (``ncclSymkPickKernel`` does not read it); that ``NCCL_ALGO=NVLS`` excludes them from 2.31 is
  reported (pytorch issue #197038) and not verified here: NCCL's public repository carries no 2.31
  tag to read (newest tag v2.30.7-1 when checked), so it changes nothing in the verdict.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Mapping, Optional

@dataclass(frozen=True)
class Effect:
    name: str
    value: str
    effect: str
    symmetric_off: bool = False  # no symmetric kernel anywhere: nothing to guard
    defeats_guard: bool = False  # symmetric kernels on buffers outside windows: the guard cannot hold them

    def line(self) -> str:
        return f"{self.name}={self.value[:40]}: {self.effect}"


@dataclass(frozen=True)
class Parameter:
    """One parameter: the values that leave NCCL's default behaviour, and what they do to the verdict."""

    name: str
    default_values: tuple  # values that mean NCCL's default
    when_set: str
    when_default: str
    symmetric_off: bool = False
    defeats_guard: bool = False


#: the parameters read, in the order the doctor shows them (sources in the module docstring)
PARAMETERS = (
    Parameter("NCCL_WIN_ENABLE", ("", "1"), "symmetric windows and kernels off on every communicator (src/init.cc): "
              "no race, nothing to guard", "windows on (the default)", symmetric_off=True),
    Parameter("NCCL_SYM_NOWIN_ENABLE", ("", "0"), "NCCL 2.29+ runs LL symmetric kernels on buffers outside windows: "
              "the race guard cannot keep CP gathers off them; unset it", "off (the default)", defeats_guard=True),
    Parameter("NCCL_SYM_KERNEL", ("", "^"), "forces a symmetric kernel; on NCCL 2.29+ also on buffers outside "
              "windows, which defeats the race guard; unset it", "NCCL chooses (the default)", defeats_guard=True),
    Parameter("NCCL_ALGO", (), "legacy algorithms only; does not keep symmetric kernels off on 2.28-2.30 (NVLS "
              "excluding them from 2.31 is reported, not verified)", ""),
)


def effects(environ: Optional[Mapping[str, str]] = None) -> List[Effect]:
    """What each parameter that is set does to the verdict."""
    env = os.environ if environ is None else environ
    found = []
    for parameter in PARAMETERS:
        raw = env.get(parameter.name)
        if raw is None:
            continue
        value = raw.strip()
        if value in parameter.default_values:
            found.append(Effect(parameter.name, value, parameter.when_default))
        else:
            found.append(Effect(parameter.name, value, parameter.when_set, parameter.symmetric_off,
                                parameter.defeats_guard))
    return found


def symmetric_off(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The setting that keeps every symmetric kernel off, as one line, or None."""
    for effect in effects(environ):
        if effect.symmetric_off:
            return effect.line()
    return None


def guard_defeated(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The setting that lets symmetric kernels run outside windows (the guard cannot hold), as one line, or None."""
    lines = [e.line() for e in effects(environ) if e.defeats_guard]
    return "; ".join(lines) or None
