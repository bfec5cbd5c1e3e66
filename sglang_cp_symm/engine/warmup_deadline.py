"""How long the warm-up may keep a server from reporting ready: one deadline, tied to sglang's own timeouts.

Why a deadline at all: sglang awaits its named warm-ups in the HTTP server's
``lifespan`` with no timeout (``await execute_warmups(...)``, http_server.py 0.5.6
line 290, 0.5.11 line 382, 0.5.23 line 420), so a warm-up request that is never
answered (a rank that never replies, a prompt that waits in a full queue) would keep
the server from ever starting.

The default is the budget sglang gives its own warm-up request, which it sends right
after the named ones and before it marks the server Up: ``SGLANG_WARMUP_TIMEOUT``
when set above 0, else 600 s, or 1800 s on a PD prefill server ("deep gemm precache";
``_execute_server_warmup``, http_server.py 0.5.11 lines 1952-1990, the same in
0.5.6-0.5.23; the variable: environ.py, ``EnvFloat(-1)``). It is never below 1.5 x
``--watchdog-timeout`` (300 s by default), so that a forward that hangs is caught by
sglang's own watchdog first, with its stack dump (the watchdog kills between T and
1.5 T, ``utils/watchdog.py``). ``SGLANG_CP_SYMM_WARMUP_TIMEOUT`` replaces all of this.

The deadline bounds the warm-up's prompts on every DP rank together (the query of
the ranks' KV pools included). After it, or after a failure, the warm-up takes at most
``grace_s`` to stop the other ranks (abort, then cancel) and ``grace_s`` (plus a few
seconds to abort and unwind) for the per-rank completion markers: the start waits at
most ``bound_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

#: sglang's warm-up request budget when ``SGLANG_WARMUP_TIMEOUT`` is not above 0 (http_server.py).
SGLANG_WARMUP_BUDGET_S = 600.0
#: The same on a PD prefill server.
SGLANG_PREFILL_WARMUP_BUDGET_S = 1800.0
#: ``--watchdog-timeout``'s default (server_args.py, 0.5.6-0.5.23).
SGLANG_WATCHDOG_TIMEOUT_S = 300.0
#: The deadline is at least this many watchdog timeouts (the watchdog kills between 1 and 1.5 of them).
WATCHDOG_MARGIN = 1.5
#: After a timeout or failure: the longest wait for aborted requests to end, and for the completion markers.
STOP_GRACE_S = 30.0
#: How long an unanswered completion marker's abort is given before its task is cancelled.
ABORT_ANSWER_S = 2.0
#: How long a cancelled task is given to unwind sglang's generator.
UNWIND_S = 1.0


@dataclass(frozen=True)
class Deadline:
    seconds: float  # the warm-up's prompts, all DP ranks together
    source: str  # where the figure came from, in words
    grace_s: float  # to stop the other ranks, and again for the markers

    @property
    def bound_s(self) -> float:
        """The longest the warm-up can keep the server from starting (prompts, stopping, markers)."""
        return self.seconds + 2 * self.grace_s + ABORT_ANSWER_S + 2 * UNWIND_S

    def describe(self) -> dict:
        return {"seconds": self.seconds, "source": self.source, "grace_s": self.grace_s, "bound_s": self.bound_s}


def warmup_deadline(override_s: Optional[float], sglang_warmup_timeout: Optional[float] = None,
                    watchdog_timeout: Optional[float] = None, disaggregation_mode: Any = "null") -> Deadline:
    """The deadline from ``SGLANG_CP_SYMM_WARMUP_TIMEOUT`` (``override_s``), else from sglang's own timeouts."""
    if override_s:
        seconds = float(override_s)
        return Deadline(seconds, f"SGLANG_CP_SYMM_WARMUP_TIMEOUT={override_s:g}", min(STOP_GRACE_S, seconds))
    prefill = str(disaggregation_mode).lower().endswith("prefill")
    if sglang_warmup_timeout is not None and sglang_warmup_timeout > 0:
        base, why = float(sglang_warmup_timeout), f"SGLANG_WARMUP_TIMEOUT={sglang_warmup_timeout:g}"
    elif prefill:
        base, why = SGLANG_PREFILL_WARMUP_BUDGET_S, "sglang's own warm-up budget on a PD prefill server"
    else:
        base, why = SGLANG_WARMUP_BUDGET_S, "sglang's own warm-up budget, SGLANG_WARMUP_TIMEOUT unset"
    watchdog = float(watchdog_timeout) if watchdog_timeout and watchdog_timeout > 0 else SGLANG_WATCHDOG_TIMEOUT_S
    floor = WATCHDOG_MARGIN * watchdog
    if floor > base:
        return Deadline(floor, f"1.5 x --watchdog-timeout {watchdog:g} s, above {why} ({base:g} s)", STOP_GRACE_S)
    return Deadline(base, why, STOP_GRACE_S)


def sglang_warmup_timeout() -> Optional[float]:
    """``SGLANG_WARMUP_TIMEOUT`` as sglang itself reads it (its ``envs`` registry); None where it cannot be read."""
    try:
        from sglang.srt.environ import envs

        return float(envs.SGLANG_WARMUP_TIMEOUT.get())
    except Exception:  # a release without the registry, or a value sglang cannot parse either
        return None
