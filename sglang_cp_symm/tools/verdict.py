"""What will happen to one CP all-gather, given the release, the NCCL and the plugin's switches.

A pure function, so the doctor's answers are tested row by row (tests/test_verdict.py)
without a GPU. It combines three facts: where the release allocates the output
(register), whether its allocator registers that buffer with the CP communicator
(up to 0.5.11 only with the plugin's CP pool, see ``pool``), and what NCCL needs
before it picks a symmetric kernel (``nccl_policy``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from ..engine.nccl_policy import SAFE_UPGRADE, NcclVersion, decide, line_for
from ..engine.settings import Settings
from ..targets import POOL_FIX, Target
from ..releases import Release


@dataclass(frozen=True)
class Verdict:
    output_in_pool: bool
    output_cp_registered: bool  # in a segment registered with the attention-CP communicator
    send_registered: bool
    kernel: Optional[bool]  # NCCL picks its symmetric kernel (None: NCCL unknown)
    hazard: Optional[str]
    action: Optional[str]
    patched_by_plugin: bool

    def as_dict(self) -> dict:
        return asdict(self)


def verdict(release: Release, target: Target, nccl: Optional[NcclVersion], settings: Settings,
            sm90_or_later: bool = True) -> Verdict:
    plugin = settings.enabled
    decision = decide(nccl, settings.send, settings.allow_nccl_race, sm90_or_later) if plugin else None
    upstream = target.fixed_upstream_in(release)
    patched_output = plugin and not upstream and decision.patch_outputs
    in_pool = upstream or patched_output
    pool_fix_on = plugin and decision.patch_outputs  # held back with the outputs on a racy NCCL
    cp_registered = in_pool and (pool_fix_on or not POOL_FIX.applies_to(release))
    send = bool(plugin and decision.stage_send)
    if nccl is None:
        kernel, line = None, None
    else:
        line = line_for(nccl)
        kernel = line.window_api and cp_registered and (send or not line.needs_send_registered)
    racy = line is not None and line.race and sm90_or_later
    hazard = (f"NCCL {nccl}: the symmetric kernel that runs this gather can read its input early on Hopper"
              if kernel and racy else None)
    if hazard or (racy and not kernel):
        action = f"upgrade NCCL to >= {SAFE_UPGRADE}"
    elif not plugin and not upstream:
        action = "set SGLANG_CP_SYMM=1"
    elif not plugin and POOL_FIX.applies_to(release):
        action = "set SGLANG_CP_SYMM=1 (this release registers CP buffers with the TP communicator)"
    elif kernel is False and line is not None and line.needs_send_registered and not send:
        action = "set SGLANG_CP_SYMM_SEND=1 (this NCCL needs the send buffer registered too)"
    elif kernel is False and line is not None and not line.window_api:
        action = f"upgrade NCCL to >= {SAFE_UPGRADE}"
    else:
        action = None
    return Verdict(in_pool, cp_registered, send, kernel, hazard, action, bool(patched_output or send))
