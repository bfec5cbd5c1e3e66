"""The five configurations stage D compares, each set up through the plugin's public switches.

- ``unpatched``: the plugin off; the release as shipped.
- ``output-only``: what a bare backport of sglang PR #24040 gives: the output allocation of every CP
  all-gather that lacks it moved into ``use_symmetric_memory`` (the plugin's own source edit,
  ``engine.patching.compile_rewritten``, with ``output=True, send=False``), and nothing else: no CP pool
  of its own (on 0.5.6-0.5.11 the buffer is then carved from the TP pre-allocation and registered with the
  TP communicator only), no send staging. On 0.5.12+ this is what upstream already ships, so the mode
  equals ``unpatched`` there (the table says so).
- ``default``: ``patch(Settings(enabled=True, allow_nccl_race=True))``: the plugin's default switches,
  except that the race is accepted, so the kernel measured is the one NCCL picks for what the plugin
  registers. On an NCCL without the race (>= 2.30.7) this is exactly the default.
- ``send``: the same with ``send=True`` (``SGLANG_CP_SYMM_SEND=1``).
- ``guard``: ``patch(Settings(enabled=True))``, race not accepted: the plugin's true default on an NCCL of
  the racy range 2.28.0-2.30.6 (issue 16's guard then keeps every CP all-gather's buffers out of windows).
  On an NCCL outside that range the policy is judged as for 2.30.4 (the last racy release), so the guard's
  effect on the real NCCL is still measured; the table names the NCCL judged.

What each mode did is read back from ``sglang_cp_symm.status()``, defensively: the targets' states, and
any entry about the guard (issue 16 adds one; its name is not fixed yet, so every key holding "guard" is
reported).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

RACY_STAND_IN = "2.30.4"


@dataclass(frozen=True)
class Mode:
    name: str
    title: str
    plugin: bool = False
    output_only: bool = False
    send: bool = False
    allow_race: bool = True
    guard: bool = False

    def switches(self) -> str:
        if self.output_only:
            return "bare PR #24040 backport (harness)"
        if not self.plugin:
            return "SGLANG_CP_SYMM=0"
        parts = ["SGLANG_CP_SYMM=1"]
        if self.send:
            parts.append("SEND=1")
        parts.append("ALLOW_NCCL_RACE=1" if self.allow_race else "ALLOW_NCCL_RACE unset")
        return " ".join(parts)


MODES = (
    Mode("unpatched", "plugin off"),
    Mode("output-only", "output allocation in the CP context only (bare sglang PR #24040)", output_only=True),
    Mode("default", "plugin default (race accepted)", plugin=True),
    Mode("send", "plugin, send staging", plugin=True, send=True),
    Mode("guard", "plugin default, race not accepted (race guard)", plugin=True, allow_race=False, guard=True),
)
BY_NAME = {m.name: m for m in MODES}


def parse_modes(text: str) -> List[Mode]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"stage D: unknown mode {unknown[0][:30]!r}; modes: {', '.join(BY_NAME)}")
    return [BY_NAME[n] for n in names]


def is_racy(version: Optional[str]) -> Optional[bool]:
    """Whether the plugin's policy table marks this NCCL as carrying the Hopper race; None if unknown."""
    if not version:
        return None
    from sglang_cp_symm.engine.nccl_policy import NcclVersion, line_for

    return line_for(NcclVersion.parse(version)).race


def judged_nccl(mode: Mode, nccl: Optional[str], given: bool) -> Optional[str]:
    """The NCCL the plugin's policy is asked to judge for this mode (None: the one the engine loads)."""
    if mode.guard and is_racy(nccl) is False:
        return RACY_STAND_IN
    return nccl if given else None


@dataclass
class Applied:
    mode: Mode
    judged: Optional[str]
    status: Dict[str, Any] = field(default_factory=dict)
    undo: Callable[[], None] = lambda: None
    note: str = ""


def guard_entries(status: Dict[str, Any]) -> Dict[str, Any]:
    """Whatever ``status()`` says about the race guard: every key (top level, or in ``nccl``) naming it."""
    found = {}
    for key, value in (status or {}).items():
        if "guard" in str(key).lower():
            found[key] = value
    for key, value in ((status or {}).get("nccl") or {}).items():
        if "guard" in str(key).lower():
            found[f"nccl.{key}"] = value
    return found


def summarize_status(status: Dict[str, Any]) -> Dict[str, Any]:
    """The parts of ``status()`` the table shows: target states, what was held back or guarded, the policy."""
    targets = {name: str(t.get("state", "?")) + (f" ({t['detail']})" if t.get("detail") and t.get("state") == "patched"
                                                  else "")
               for name, t in ((status or {}).get("targets") or {}).items()}
    held = sorted(name for name, t in ((status or {}).get("targets") or {}).items()
                  if any(w in str(t.get("state", "")).lower() for w in ("held", "guard")))
    nccl = (status or {}).get("nccl") or {}
    return {"targets": targets, "held_or_guarded": held, "guard": guard_entries(status),
            "policy": {k: nccl.get(k) for k in ("version", "read_from", "patch_outputs", "stage_send",
                                                 "kernel_engaged", "reason")} if nccl else {},
            "watchdog": (status or {}).get("watchdog")}


def bare_backport(release) -> Applied:
    """The ``output-only`` mode: the plugin's source edit for the output allocation, nothing else."""
    from sglang_cp_symm.engine.hooks import unwrap
    from sglang_cp_symm.engine.patching import compile_rewritten, resolve
    from sglang_cp_symm.engine.rewrite import REQUIRED_NAMES
    from sglang_cp_symm.targets import SYMMETRIC_CONTEXT_NAME, needs_output_patch

    undo: List[Callable[[], None]] = []
    states: Dict[str, Dict[str, str]] = {}
    for target in needs_output_patch(release):
        try:
            module = importlib.import_module(target.module)
            owner, attr, current = resolve(module, target.function)
        except Exception as exc:
            states[target.name] = {"state": "absent", "detail": f"{type(exc).__name__}"}
            continue
        original = unwrap(current)
        if SYMMETRIC_CONTEXT_NAME in original.__code__.co_names:
            states[target.name] = {"state": "upstream", "detail": "already opens the context"}
            continue
        for name, source in REQUIRED_NAMES.items():
            if name not in module.__dict__:
                setattr(module, name, getattr(importlib.import_module(source), name))
                undo.append(lambda m=module, n=name: m.__dict__.pop(n, None))
        new_fn = compile_rewritten(original, target, module, output=True, send=False)
        setattr(owner, attr, new_fn)
        undo.append(lambda o=owner, a=attr, v=current: setattr(o, a, v))
        states[target.name] = {"state": "patched", "detail": "output (bare backport)"}

    def restore():
        while undo:
            undo.pop()()

    note = "" if states else "upstream already allocates every CP output in the context: same as unpatched"
    return Applied(BY_NAME["output-only"], None, {"targets": states}, restore, note)


def apply(mode: Mode, release, nccl: Optional[str], given: bool) -> Applied:
    """Set ``mode`` up in this process; ``Applied.undo`` takes it back. ``given``: judge ``nccl`` (CPU, or a
    guard stand-in) instead of reading the library the engine loads."""
    if mode.output_only:
        return bare_backport(release)
    if not mode.plugin:
        return Applied(mode, None)
    import sglang_cp_symm
    from sglang_cp_symm.engine.settings import Settings

    judged = judged_nccl(mode, nccl, given)
    settings = Settings(enabled=True, send=mode.send, allow_nccl_race=mode.allow_race, warmup=False, watchdog=True)
    status = sglang_cp_symm.patch(settings, nccl=judged)
    note = f"policy judged as NCCL {judged}" if judged and judged != nccl else ""
    return Applied(mode, judged, status, sglang_cp_symm.unpatch, note)


def refresh_status(applied: Applied) -> None:
    """Re-read ``status()`` once the modules were imported and the targets settled (plugin modes only)."""
    if applied.mode.plugin and "sglang_cp_symm" in sys.modules:
        applied.status = sys.modules["sglang_cp_symm"].status()
