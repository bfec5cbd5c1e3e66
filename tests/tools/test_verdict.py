"""Stage A: the doctor's verdict table, release x NCCL x mode -> outcome, each row with its fact.

Facts: R1 0.5.10 allocates both cp_utils gather outputs outside the pool, 0.5.11 the KV one, 0.5.12+
none (register; PR #22914, #24040). R2 up to 0.5.11 the allocator registers a segment only with the
communicator that created it, so without the plugin a CP buffer sits in a TP-registered segment
(PR #21392). N1-N5 are the NCCL facts of tests/test_nccl_policy.py (N2: 2.27-2.28 need send and
receive registered; N3: >= 2.29.2 the receive buffer alone; N4: 2.28.0-2.30.6 race on Hopper).
"""

import pytest

from sglang_cp_symm.engine.nccl_policy import NcclVersion
from sglang_cp_symm.engine.settings import Settings
from sglang_cp_symm.targets import TARGETS
from sglang_cp_symm.tools.verdict import verdict
from sglang_cp_symm.releases import Release

KV = next(t for t in TARGETS if t.name == "cp_utils.reorganized_kv_cache")
ZIGZAG = next(t for t in TARGETS if t.name == "cp.zigzag")
OFF = Settings()
ON = Settings(enabled=True)
SEND = Settings(enabled=True, send=True)
RACE = Settings(enabled=True, send=True, allow_nccl_race=True)

# release, target, nccl, mode -> (output CP-registered, send registered, kernel, hazard?, action contains)
ROWS = [
    ("0.5.11", KV, "2.30.7", OFF, False, False, False, False, "SGLANG_CP_SYMM=1"),   # R1
    ("0.5.11", KV, "2.30.7", ON, True, False, True, False, None),                    # R1 + R2 fixed + N3
    ("0.5.10", KV, "2.27.7", ON, True, False, False, False, "SEND=1"),                # N2: output alone is not enough
    ("0.5.10", KV, "2.27.7", SEND, True, True, True, False, None),                    # N2 + staging, no race in 2.27
    ("0.5.11", KV, "2.28.9", SEND, True, False, False, False, "2.30.7"),              # N4: staging refused
    ("0.5.11", KV, "2.28.9", RACE, True, True, True, True, "2.30.7"),                 # N4 accepted: racy kernel
    ("0.5.11", KV, "2.29.7", ON, False, False, False, False, "2.30.7"),               # N3 + N4: output held back
    ("0.5.12", KV, "2.29.7", OFF, True, False, True, True, "2.30.7"),                 # upstream registers: racy
    ("0.5.12", KV, "2.28.9", OFF, True, False, False, False, "2.30.7"),               # upstream, N2: no kernel
    ("0.5.23", ZIGZAG, "2.30.7", ON, True, False, True, False, None),                 # upstream + N3
    ("0.5.23", ZIGZAG, "2.26.5", ON, True, False, False, False, "2.30.7"),            # N1: no windows at all
]


@pytest.mark.parametrize("release,target,nccl,mode,cp_reg,send,kernel,hazard,action", ROWS)
def test_verdict_row(release, target, nccl, mode, cp_reg, send, kernel, hazard, action):
    v = verdict(Release.parse(release), target, NcclVersion.parse(nccl), mode)
    assert (v.output_cp_registered, v.send_registered, v.kernel, v.hazard is not None) == (cp_reg, send, kernel, hazard)
    if action is None:
        assert v.action is None
    else:
        assert action in (v.action or ""), v.action


def test_without_plugin_on_0_5_11_the_upstream_output_is_in_a_tp_registered_segment():
    hidden = next(t for t in TARGETS if t.name == "cp_utils.reorganized")
    v = verdict(Release.parse("0.5.11"), hidden, NcclVersion.parse("2.30.7"), OFF)
    assert v.output_in_pool and not v.output_cp_registered and v.kernel is False   # R2


def test_on_a_racy_nccl_the_pool_fix_is_held_back_with_the_outputs():
    # R2 + N3 + N4: on 0.5.11 the upstream-allocated gather sits in a TP-registered segment; the CP pool
    # would register it with the CP communicator and so engage the racy kernel: held back too.
    hidden = next(t for t in TARGETS if t.name == "cp_utils.reorganized")
    v = verdict(Release.parse("0.5.11"), hidden, NcclVersion.parse("2.29.7"), ON)
    assert v.output_in_pool and not v.output_cp_registered and v.kernel is False and v.hazard is None
    accepted = verdict(Release.parse("0.5.11"), hidden, NcclVersion.parse("2.29.7"), RACE)
    assert accepted.output_cp_registered and accepted.kernel and accepted.hazard


def test_unknown_nccl_gives_unknown_kernel():
    assert verdict(Release.parse("0.5.11"), KV, None, ON).kernel is None
