"""The plan: one pure function from the facts of a process to everything the plugin does there.

The engine executes it (``patching``); ``status()``, the start-up line, ``doctor``,
``doctor --check``, ``status --apply`` and ``demo`` render it. Nothing else decides,
so what a user is told is what the engine does.

The facts (``Facts``, gathered by ``gather_facts`` in the engine and in the doctor alike):
the installed release and what each target's installed source shows
(``source_facts``: the version number never decides alone), the NCCL that was read
(or why it is unknown), the switches, the NCCL environment settings (``nccl_env``)
and the GPU where known.

The plan (``make_plan``) holds, for every target of the register and for the CP
pool fix: the action (``PATCH``, ``GUARD`` or ``NONE``), the state the engine will
report with its reason, and the verdict a user cares about (the output and the send
buffer in a window registered with the CP communicator, NCCL's symmetric kernel,
the hazard, the action to take). It also holds the NCCL policy's decision
(``nccl_policy``) and the race guard (``race_guard.plan_guard``).

Where the engine's own proofs at import (``patching.plan_target``: the function in
memory is the one in the file, every inserted name resolves) refuse a ``PATCH``,
the engine reports ``skipped: <why>``; the doctor reads the same source with the
same rewrite proofs, so on a released wheel the two agree
(``tests/engine/test_plan_agrees.py``).
"""

from __future__ import annotations

import os
from functools import partial
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable, Dict, Iterable, Optional, Tuple

from . import nccl_env, nccl_library
from .nccl_policy import SAFE_UPGRADE, Decision, NcclVersion, decide, line_for, upgrade_command
from .race_guard import GuardPlan, plan_guard
from .settings import ENABLE, Settings
from .source_facts import (
    ABSENT as SOURCE_ABSENT,
    NEEDS_FIX,
    NEEDS_PATCH,
    PATCHED_SOURCE,
    UPSTREAM as SOURCE_UPSTREAM,
    SourceFact,
    module_text,
    pool_state,
    target_state,
)
from ..releases import Build, Release
from ..targets import FIRST_SUPPORTED, LAST_SUPPORTED, POOL_FIX, Target, is_supported, targets_for


class State(str, Enum):
    """What the engine reports for a target (a ``str``, so JSON and logs show the word)."""

    PATCHED = "patched"
    UPSTREAM = "upstream"
    ABSENT = "absent"
    SKIPPED = "skipped"
    WAITING = "waiting for import"
    HELD = "held back"
    GUARDED = "guarded"
    OFF = "off"  # the plugin is off: sglang's own code runs

    def __str__(self) -> str:
        return self.value


def state_words(state: State, detail: str) -> str:
    """A target's state as the status line, ``status()`` and the doctor show it: ``patched (output)``,
    ``held back: why``, ``upstream`` (the plan's entry and the patcher's record alike)."""
    if state in (State.SKIPPED, State.HELD) or (state == State.GUARDED and detail):
        return f"{state}: {detail}"
    if state == State.PATCHED and detail:
        return f"{state} ({detail})"
    return str(state)


class Action(str, Enum):
    """What the engine does when the target's module is imported."""

    PATCH = "patch"  # rewrite the function (output and/or send), proved again on the code in memory
    GUARD = "guard"  # the race guard holds the contexts it opens
    NONE = "none"  # leave it as sglang wrote it

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Facts:
    """Everything the plan is decided from; gathered once per process (``gather_facts``)."""

    release: Optional[Release]
    settings: Settings
    sources: Tuple[Tuple[str, SourceFact], ...] = ()  # target name -> what its installed source shows
    pool_source: SourceFact = SourceFact(SOURCE_ABSENT, "not read")
    nccl: Optional[NcclVersion] = None
    nccl_from: str = "not read"  # where it was read, or why it is unknown
    nccl_env: Tuple[nccl_env.Effect, ...] = ()
    gpu: Optional[Tuple[int, int]] = None  # compute capability where known; None: assumed sm90+
    release_problem: Optional[str] = None  # sglang is installed but its version cannot be read (``releases.Build``)

    @property
    def sm90(self) -> bool:
        """Hopper or newer (Hopper and Blackwell): the race is keyed on compute capability >= 9.0."""
        return nccl_library.hopper_or_later(self.gpu)

    def source(self, name: str) -> SourceFact:
        return dict(self.sources).get(name, SourceFact(SOURCE_ABSENT, "not read"))


@dataclass(frozen=True)
class TargetPlan:
    """One target of the register, or the CP pool fix: what happens to it, and what that means."""

    name: str
    where: str
    action: Action
    state: State
    detail: str = ""
    source: str = ""  # what the installed source shows (``source_facts``)
    output: bool = False  # the plugin moves the output allocation into the context
    send: bool = False  # the plugin stages the send buffer in the context
    output_in_window: bool = False  # the output lies in a window registered with the gather's communicator
    send_in_window: bool = False
    kernel: Optional[bool] = None  # NCCL picks its symmetric kernel for this gather (None: the NCCL is unknown)
    hazard: Optional[str] = None
    action_to_take: Optional[str] = None

    @property
    def words(self) -> str:
        return state_words(self.state, self.detail)

    def verdict(self) -> dict:
        """The columns the doctor shows and ``status()`` reports, compared by the agreement test."""
        return {"state": str(self.state), "output_in_window": self.output_in_window,
                "send_in_window": self.send_in_window, "kernel": self.kernel}


@dataclass(frozen=True)
class Plan:
    facts: Facts
    problem: Optional[str] = None  # why nothing is planned (no sglang, a release outside the register)
    decision: Optional[Decision] = None
    guard: GuardPlan = GuardPlan(False, "not planned")
    targets: Tuple[TargetPlan, ...] = ()
    pool: Optional[TargetPlan] = None
    notes: Tuple[str, ...] = field(default=())  # facts that overrode the release number, settings that matter
    exposure: Optional[str] = None  # on a racy NCCL: what the race guard leaves exposed, and the two real fixes

    def entries(self) -> Tuple[TargetPlan, ...]:
        return self.targets + ((self.pool,) if self.pool is not None else ())

    def entry(self, name: str) -> Optional[TargetPlan]:
        return next((t for t in self.entries() if t.name == name), None)

    def recommended(self) -> Tuple[str, ...]:
        seen: Dict[str, None] = {}
        for t in self.targets:
            if t.action_to_take:
                seen.setdefault(t.action_to_take, None)
        return tuple(seen)

    def engages_kernel(self) -> bool:
        return any(t.kernel for t in self.targets)

    def changes_something(self) -> bool:
        return any(t.action == Action.PATCH for t in self.entries())


def _source_notes(release: Release, target: Target, fact: SourceFact) -> Optional[str]:
    """A line where the installed source says otherwise than the release number would."""
    by_number = SOURCE_UPSTREAM if target.fixed_upstream_in(release) else NEEDS_PATCH
    if fact.state in (SOURCE_UPSTREAM, NEEDS_PATCH) and fact.state != by_number:
        return (f"{target.name}: the installed source shows '{fact.state}' where sglang {release} would be "
                f"'{by_number}' (a development, local or vendor build): the source decides")
    return None


def _kernel(facts: Facts, output_registered: bool, send_registered: bool) -> Optional[bool]:
    """Whether NCCL picks its symmetric AllGather for buffers registered so (``nccl_policy`` and ``nccl_env``)."""
    if any(effect.symmetric_off or effect.allgather_off for effect in facts.nccl_env):
        return False  # windows off, or (2.31+) NCCL_ALGO covers AllGather and NCCL_SYM_KERNEL names none of its kernels
    if facts.nccl is None:
        return None
    line = line_for(facts.nccl)
    if not line.window_api:
        return False
    if _outside_windows(facts):
        return True  # LL symmetric kernels run on buffers outside windows too
    return output_registered and (send_registered or not line.needs_send_registered)


def _outside_windows(facts: Facts) -> bool:
    """A known NCCL (2.29+, ``nccl_env.effects`` decides) with a setting that runs LL symmetric kernels on buffers
    outside any window."""
    return facts.nccl is not None and any(effect.defeats_guard for effect in facts.nccl_env)


def _racy(facts: Facts) -> bool:
    return facts.nccl is not None and line_for(facts.nccl).race and facts.sm90


def _action_to_take(facts: Facts, t: TargetPlan, pool_applies: bool) -> Optional[str]:
    """The one thing a user should do about this target, or None (ported from the doctor's verdict rules)."""
    enabled = facts.settings.enabled
    if _racy(facts):
        return f"upgrade NCCL to >= {SAFE_UPGRADE}"
    if not enabled and t.source == NEEDS_PATCH:
        return f"set {ENABLE}=1"
    if not enabled and pool_applies:
        return f"set {ENABLE}=1 (this release registers CP buffers with the TP communicator)"
    if facts.nccl is None or t.kernel is not False:
        return None
    line = line_for(facts.nccl)
    if not line.window_api:
        return f"upgrade NCCL to >= {SAFE_UPGRADE}"
    if line.needs_send_registered and not t.send_in_window and t.output_in_window:
        return "set SGLANG_CP_SYMM_SEND=1 (this NCCL needs the send buffer registered too)"
    return None


def race_exposure(facts: Facts, guard: GuardPlan) -> Optional[str]:
    """On a racy NCCL (2.28.0-2.30.6) and sm90+: the whole truth, whatever the plugin does.

    The race is in every symmetric kernel NCCL builds, not only AllGather's: NCCL commit 2948185 restores
    ``cudaGridDependencySynchronize`` in all four templates of ``src/device/symmetric/generate.py`` (v2.30.7-1
    lines 176-178, 184-186, 194-196, 206-208), and symmetric plans launch with programmatic serialization on
    compute capability >= 9.0 (``src/enqueue.cc`` v2.28.9-1:1631, v2.29.7-1:1743). So with ``--enable-symm-mem``
    sglang's TP all-reduce (``RowParallelLinear`` allocates its output under ``use_symmetric_memory(tp_group)``,
    and pynccl's all-reduce works in place on it) and every other group that uses the pool run racy kernels too.
    The guard holds the CP and DCP groups only; holding every group would be dropping ``--enable-symm-mem``.
    """
    if facts.nccl is None or not line_for(facts.nccl).race or not facts.sm90:
        return None
    if any(effect.symmetric_off for effect in facts.nccl_env):
        return None
    held = "/".join(guard.groups) if guard.engaged and facts.settings.enabled else "none (the race guard is off)"
    return (f"with --enable-symm-mem, NCCL {facts.nccl}'s symmetric kernels can read their input before it is "
            "written on compute capability >= 9.0 (Hopper and Blackwell), in every group that uses the symmetric "
            "pool: the TP all-reduce and reduce-scatter, and MoE groups where they use it; the race guard holds "
            f"only the CP and DCP groups (held: {held}). Fix, in this order: {upgrade_command(facts.release)}; "
            "or run without --enable-symm-mem until then (sglang PR #37768, open, drops symmetric memory under DCP below "
            "2.30.7)")


def make_plan(facts: Facts) -> Plan:
    """The plan for these facts. Pure: the same facts give the same plan, in any process."""
    release, settings = facts.release, facts.settings
    if release is None:
        return Plan(facts, problem=facts.release_problem or "sglang is not installed in this environment")
    if not is_supported(release):
        return Plan(facts, problem=f"release not in the register ({FIRST_SUPPORTED}..{LAST_SUPPORTED}); "
                                   "upgrade sglang-cp-symm or pin a supported sglang")
    decision = decide(facts.nccl, settings.send, settings.allow_nccl_race, facts.sm90)
    guard = plan_guard(decision, release, settings.allow_nccl_race,
                       nccl_env.settings_that(facts.nccl_env, "symmetric_off"),
                       nccl_env.settings_that(facts.nccl_env, "defeats_guard"))
    if guard.engaged and not facts.sm90:
        guard = GuardPlan(False, f"not needed: GPU {facts.gpu[0]}.{facts.gpu[1]} is below sm90 (no programmatic "
                                 "launch)")
    guarding = settings.enabled and guard.engaged
    notes = [f"{effect.line()}: whatever the plugin or sglang registers, NCCL picks no symmetric kernel for these "
             "CP all-gathers" for effect in facts.nccl_env if effect.symmetric_off or effect.allgather_off]
    pool = _pool_plan(facts, decision, guarding)
    targets = []
    for target in targets_for(release):
        fact = facts.source(target.name)
        note = _source_notes(release, target, fact)
        if note:
            notes.append(note)
        targets.append(_target_plan(facts, target, fact, decision, guarding, pool, note))
    return Plan(facts, None, decision, guard, tuple(targets), pool, tuple(notes), race_exposure(facts, guard))


def _pool_plan(facts: Facts, decision: Decision, guarding: bool) -> TargetPlan:
    """The CP pool fix (0.5.6-0.5.11): what its allocator's source needs, and what the settings and NCCL allow."""
    fact = facts.pool_source
    entry = partial(TargetPlan, POOL_FIX.name, f"{POOL_FIX.module}.{POOL_FIX.context_class}", source=fact.state)
    if fact.state in (SOURCE_UPSTREAM, PATCHED_SOURCE):
        return entry(Action.NONE, State.UPSTREAM, fact.detail)
    if fact.state != NEEDS_FIX:
        return entry(Action.NONE, State.ABSENT, fact.detail)
    if not facts.settings.enabled:
        return entry(Action.NONE, State.OFF, "")
    if guarding:  # it would register CP segments with the CP communicator
        return entry(Action.NONE, State.GUARDED, "")
    if decision.patch_outputs:
        return entry(Action.PATCH, State.PATCHED, "")
    # registering CP buffers with the CP communicator would engage the kernel that was held back
    return entry(Action.NONE, State.HELD, decision.reason)


def _target_plan(facts: Facts, target: Target, fact: SourceFact, decision: Decision, guarding: bool,
                 pool: TargetPlan, source_note: Optional[str]) -> TargetPlan:
    """One target: its action and state from its installed source (``fact``), the settings and the NCCL decision;
    then its verdict (output and send buffer in a window of its communicator, symmetric kernel, hazard)."""
    settings = facts.settings
    base = dict(name=target.name, where=target.dotted, source=fact.state)
    if fact.state == SOURCE_ABSENT:
        return TargetPlan(**base, action=Action.NONE, state=State.ABSENT, detail=fact.detail)
    if fact.state not in (NEEDS_PATCH, SOURCE_UPSTREAM):  # a shape the rewrite does not prove
        return TargetPlan(**base, action=Action.NONE, state=State.SKIPPED, detail=fact.detail,
                          kernel=_kernel(facts, False, False))
    needs_output = fact.state == NEEDS_PATCH
    said = [w for w in ("the function already opens the context" if source_note else "", fact.staged) if w]
    if not settings.enabled:
        entry = TargetPlan(**base, action=Action.NONE, state=State.OFF)
    elif guarding:
        entry = TargetPlan(**base, action=Action.GUARD, state=State.GUARDED)
    else:
        output = needs_output and decision.patch_outputs
        send = decision.stage_send and not fact.staged  # a source that stages already is left as it is
        if output or send:
            what = "+".join(k for k, on in (("output", output), ("send", send)) if on)
            entry = TargetPlan(**base, action=Action.PATCH, state=State.PATCHED, detail=what, output=output,
                               send=send)
        elif needs_output:
            entry = TargetPlan(**base, action=Action.NONE, state=State.HELD, detail=decision.reason)
        else:
            entry = TargetPlan(**base, action=Action.NONE, state=State.UPSTREAM,
                               detail="; ".join(said) or target.fixed_by)
    pool_registers = pool.source in (SOURCE_UPSTREAM, PATCHED_SOURCE) or pool.action == Action.PATCH
    in_pool = entry.state != State.GUARDED and (not needs_output or entry.output)
    output_registered = in_pool and pool_registers
    send_registered = entry.send and pool_registers
    kernel = _kernel(facts, output_registered, send_registered)
    if entry.state == State.GUARDED and not _outside_windows(facts):
        kernel = False  # nothing of this gather is in a window of its communicator
    hazard = (f"NCCL {facts.nccl}: the symmetric kernel that runs this gather can read its input early on sm90+ "
              "(Hopper and Blackwell)") if kernel and _racy(facts) else None
    entry = replace(entry, output_in_window=output_registered, send_in_window=send_registered, kernel=kernel,
                    hazard=hazard)
    return replace(entry, action_to_take=_action_to_take(facts, entry, pool.source == NEEDS_FIX))


def outcome(entries: Iterable[Tuple[str, State, str]], guard_reason: Optional[str] = None,
            lifted: Optional[str] = None) -> str:
    """The first words of the status line, from (name, state, words) of every entry: ``applied``, ``partly
    applied: <why>``, ``nothing applied: <why>``, ``guarded: <why>; held: ...`` or ``waiting for import``. The
    engine says it of what it did, the doctor of the plan: one function, so the two say the same."""
    entries = list(entries)
    if any(state == State.WAITING for _, state, _ in entries):
        return str(State.WAITING)
    if guard_reason is not None:
        guarded = sorted(name for name, state, _ in entries if state == State.GUARDED)
        return f"guarded: {guard_reason}; held: {', '.join(guarded) or 'no CP all-gather imported yet'}"
    if lifted:
        return (f"nothing applied: the race guard lifted ({lifted}: below sm90 NCCL's symmetric kernels do not "
                "race), so upstream's CP contexts run as sglang wrote them; the plugin's own changes stay held back "
                "(decided before the GPU was known)")
    done = [name for name, state, _ in entries if state == State.PATCHED]
    missed = [(name, words) for name, state, words in entries if state in (State.SKIPPED, State.HELD)]
    why = "; ".join(f"{name} {words}" for name, words in missed)
    if missed and done:
        return f"partly applied: {why}"
    if missed:
        return f"nothing applied: {why}"
    if done:
        return "applied"
    return "nothing applied: every target is already fixed upstream or absent in this release"


def read_sources(release: Optional[Release], read: Callable[[str], Optional[str]] = module_text
                 ) -> Tuple[Tuple[Tuple[str, SourceFact], ...], SourceFact]:
    """(each target's source fact, the pool's) for ``release``'s targets, read with ``read(module)``."""
    if release is None or not is_supported(release):
        return (), SourceFact(SOURCE_ABSENT, "not read")
    texts = {module: read(module) for module in {t.module for t in targets_for(release)} | {POOL_FIX.module}}
    sources = tuple((t.name, target_state(texts[t.module], t)) for t in targets_for(release))
    return sources, pool_state(texts[POOL_FIX.module])


def gather_facts(settings: Settings, build: Optional[Build], nccl: Optional[NcclVersion] = None,
                 nccl_from: Optional[str] = None, gpu: Optional[Tuple[int, int]] = None) -> Facts:
    """The facts of this process, for the installed sglang (``build``: ``releases.installed_build``, None where
    there is none). ``nccl`` given (``patch(nccl=...)``, ``doctor --nccl``) replaces the library read; otherwise
    the NCCL is read as sglang's pynccl loads it (only once torch is imported: ``nccl_library``). ``gpu`` None
    reads the capability where CUDA is already up, never initialising it."""
    if nccl is None and nccl_from is None:
        nccl, nccl_from = nccl_library.engine_nccl(os.environ)
    release = None if build is None else build.release
    sources, pool = read_sources(release)
    return Facts(release=release, settings=settings, sources=sources, pool_source=pool, nccl=nccl,
                 nccl_from=nccl_from or "given", nccl_env=tuple(nccl_env.effects(os.environ, nccl)),
                 gpu=gpu if gpu is not None else nccl_library.known_capability(),
                 release_problem=None if build is None else build.problem)
