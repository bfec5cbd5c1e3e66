"""The race guard: no symmetric kernel on the CP and DCP communicators while NCCL's symmetric kernels race.

On Hopper and newer, NCCL 2.28.0-2.30.6 symmetric kernels can read their input
before the kernel that writes it has finished (``nccl_policy``'s docstring has the
sources). The plugin holds back what it would engage itself; this module also keeps
the release's own CP and DCP all-gathers off those kernels (sglang #37768 reports
GSM8K 0.10 on 0.5.18 with NCCL 2.29.7, symmetric memory and decode CP).

The mechanism, and why it is enough. NCCL picks a symmetric AllGather only for
buffers that lie in windows registered on the communicator running the collective:
on 2.27-2.28 both buffers (``src/scheduler/symmetric_sched.cc`` at v2.28.9-1), from
2.29.2 the receive buffer for the full kernel set and the send buffer alone for the
LL kernels (``src/sym_kernels.cc`` at v2.29.2-1, ``ncclSymkPickKernel``). sglang
registers with a communicator only inside a ``SymmetricMemoryContext`` of that
group: up to 0.5.11 at ``ncclMemAlloc`` while the context is open, from 0.5.12 at the
context's exit (sglang PR #21392). So the guard makes every context of the
attention-CP and DCP groups a no-op (``context_hooks`` role ``GUARD``: the
register's openers get ``nullcontext()``, and the class hooks skip sglang's
``__enter__``/``__exit__`` for a context of those groups opened elsewhere): nothing is allocated from the pool under
them and nothing is ever registered with those communicators, so no buffer of any
collective on them is in a window and NCCL cannot pick a symmetric kernel there,
whoever allocated the buffers. The groups are named by sglang's
``GroupCoordinator.unique_name``: ``attn_cp`` (parallel_state.py 0.5.12:1896,
0.5.23:2784), ``attn_cp_overlap`` (0.5.18:2011) and ``dcp`` (0.5.18:2494, 0.5.23:2731;
``layers/dcp`` exists from 0.5.15). Contexts of every other group (TP all-reduces,
MoE, the pre-allocation) are not touched.

Two cases run the CP gathers on a group that is not a CP group: 0.5.6-0.5.8 (the
NSA gathers use the attention-TP group) and ``attn_cp_size == tp_size``, where sglang
makes the CP group the TP group object (parallel_state.py 0.5.12:1873, 0.5.18:2511, 0.5.23:2761). There the
contexts that the register's CP all-gathers open are guarded by their opener, so
their outputs are allocated outside the pool. That is enough on 2.28 (both buffers
needed) and for the full kernel set on 2.29.2+; a send buffer that the model itself
allocated in a TP window could still select an LL symmetric kernel there, which
the status says (``SHARED_TP_CAVEAT``).

Every decision here is taken from the NCCL version, the switches and the GPU
model, the same on every rank of a node, so every rank skips the same contexts:
fewer pool allocations and fewer registrations, in the same order everywhere.
The GPU is read at the first guarded context (CUDA is up by then in a scheduler;
reading it earlier would initialise CUDA in the wrong process): below sm90 NCCL
does not launch symmetric kernels with programmatic serialization
(``src/enqueue.cc``: ``plan->isSymColl && compCap >= 90``), and the guard lifts.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, List, Optional

from . import context_hooks
from .logs import PluginLog, logger
from .nccl_policy import Decision, line_for, upgrade_command
from ..releases import Release

#: sglang's group names (``GroupCoordinator.unique_name`` before the ``:``) whose collectives are CP or DCP ones
GUARDED_GROUPS = ("attn_cp", "attn_cp_overlap", "dcp")
#: the first release with decode-CP all-gathers (``layers/dcp/comm.py``; read from the wheels 0.5.6-0.5.23)
DCP_FROM = Release.parse("0.5.15")
ALLOW_SWITCH = "SGLANG_CP_SYMM_ALLOW_NCCL_RACE"
SHARED_TP_CAVEAT = ("where the CP gathers run on the TP group (0.5.6-0.5.8, or attn_cp_size == tp_size) only the "
                    "contexts the register's CP all-gathers open are guarded: a send buffer the model allocated in a "
                    "TP window could still select an LL symmetric kernel on NCCL 2.29.2-2.30.6")


@dataclass(frozen=True)
class GuardPlan:
    """Whether the guard engages in this process, and the words the status and the doctor use."""

    engaged: bool
    reason: str
    fix: Optional[str] = None
    groups: tuple = ()
    defeated_by: Optional[str] = None  # an NCCL setting that runs symmetric kernels outside windows (nccl_env)

    def describe(self) -> dict:
        return {**asdict(self), "groups": list(self.groups)}


def plan_guard(decision: Decision, release: Release, allow_race: bool, symmetric_off: Optional[str] = None,
               defeated_by: Optional[str] = None) -> GuardPlan:
    """The guard for this NCCL decision. ``symmetric_off`` names an NCCL setting that already keeps every
    symmetric kernel off, ``defeated_by`` one that runs them outside windows too (``nccl_env``)."""
    groups = tuple(g for g in GUARDED_GROUPS if g != "dcp" or release >= DCP_FROM)
    if symmetric_off:
        return GuardPlan(False, f"not needed: {symmetric_off}")
    if decision.nccl is None:
        reason = ("the NCCL the engine loads is unknown, so every CP/DCP all-gather is kept off symmetric kernels "
                  f"(unknown means hold back; {ALLOW_SWITCH}=1 accepts the risk)")
        return GuardPlan(not allow_race, reason if not allow_race else f"off ({ALLOW_SWITCH}=1)",
                         "make the engine's NCCL readable (SGLANG_NCCL_SO_PATH) or run 'sglang-cp-symm doctor'",
                         groups)
    if not line_for(decision.nccl).race:
        return GuardPlan(False, f"not needed: NCCL {decision.nccl} carries no symmetric-kernel race")
    if allow_race:
        return GuardPlan(False, f"off: {ALLOW_SWITCH}=1 accepts NCCL {decision.nccl}'s symmetric-kernel race")
    reason = (f"NCCL {decision.nccl} symmetric kernels race on sm90+ (2.28.0-2.30.6): no symmetric kernel on the "
              f"{'/'.join(groups)} communicators, whoever registered the buffers ({ALLOW_SWITCH}=1 accepts the risk)")
    if defeated_by:
        reason += f"; NOT HELD where {defeated_by}"
    return GuardPlan(True, reason, upgrade_command(release), groups, defeated_by)


@dataclass
class RaceGuard:
    """The guard in this process: which openers and groups it holds, and whether the GPU lifted it.

    It writes what the context hooks read into ``table`` (the plugin object's ``ContextTable``, shared with the
    watchdog): the guarded group names, the opener roles and the GPU check."""

    table: context_hooks.ContextTable = field(default_factory=context_hooks.ContextTable)
    plan: Optional[GuardPlan] = None
    openers: set = field(default_factory=set)  # code objects of the CP all-gathers guarded by their opener
    lifted: Optional[str] = None
    _undo: List[Callable[[], None]] = field(default_factory=list)
    _lock: Any = field(default_factory=threading.RLock)

    @property
    def engaged(self) -> bool:
        return self.plan is not None and self.plan.engaged and self.lifted is None

    def engage(self, plan: GuardPlan) -> None:
        """Name the guarded groups; the openers and the class follow as their modules import."""
        with self._lock:
            self.plan, self.lifted = plan, None
            if plan.engaged:
                self.table.guarded.update(plan.groups)
                self.table.confirm = self.confirm

    def guard_opener(self, function: Any) -> None:
        """Guard the contexts ``function`` opens (a CP all-gather of the register, upstream's or the plugin's)."""
        code = getattr(getattr(function, "__wrapped__", function), "__code__", None)
        if code is not None and self.engaged:
            self.openers.add(code)
            self.table.set_role(code, context_hooks.GUARD)

    def hook_class(self, cls: type) -> None:
        """The hooks on sglang's ``SymmetricMemoryContext`` (or the CPU rehearsal's stand-in for it)."""
        if self.engaged:
            self._undo.append(self.table.hook_class(cls))

    def confirm(self) -> bool:
        """At the first guarded context: below sm90 NCCL's symmetric kernels do not race, and the guard lifts."""
        from .nccl_library import sm90_or_later

        hopper, why = sm90_or_later()
        if hopper:
            return True
        with self._lock:
            self.lifted = why
            self._clear()
        logger.info("sglang-cp-symm: race guard lifted (%s: NCCL launches symmetric kernels with programmatic "
                    "serialization only on sm90+); upstream's CP contexts run as sglang wrote them", why)
        return False

    def _clear(self) -> None:
        roles = self.table.roles
        for code in self.openers:
            if roles.get(code) == context_hooks.GUARD:
                del roles[code]
        self.openers.clear()
        self.table.guarded.clear()
        self.table.confirm = None

    def disengage(self) -> None:
        with self._lock:
            self._clear()
            while self._undo:
                self._undo.pop()()
            self.plan, self.lifted = None, None

    def describe(self) -> Optional[dict]:
        if self.plan is None:
            return None
        return {**self.plan.describe(), "lifted": self.lifted, "openers": len(self.openers)}


def report_once(plan: GuardPlan, log: PluginLog) -> None:
    if plan.engaged:
        log.warning_once("race-guard", "sglang-cp-symm: race guard engaged: %s; fix: %s; note: %s",
                         plan.reason, plan.fix, SHARED_TP_CAVEAT)
    if plan.defeated_by:
        log.warning_once("race-guard-defeated", "sglang-cp-symm: %s: CP and DCP all-gathers can still run NCCL's "
                         "racy symmetric kernels; unset it", plan.defeated_by)

