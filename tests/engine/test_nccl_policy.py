"""Stage A: the NCCL policy table, one row at a time, each with the fact it rests on.

The facts (see sglang_cp_symm/nccl_policy.py for the full citations):
- F1 ncclCommWindowRegister and symmetric kernels first ship in NCCL 2.27.3 (2.27.3 release notes).
- F2 2.27.x-2.28.x pick a symmetric kernel only if send AND receive buffer are in symmetric windows
  (src/scheduler/symmetric_sched.cc at v2.28.9-1; sglang PR #37337: 0 symmetric vs 499 ring).
- F3 from 2.29.2 a registered receive buffer alone keeps AllGather's full kernel set
  (src/sym_kernels.cc at v2.29.2-1, ncclSymkPickKernel).
- F4 2.28.0-2.30.6 symmetric kernels lack cudaGridDependencySynchronize and can read early on sm90+
  (NCCL commit 2948185 in 2.30.7; ROCm/rocm-systems PR #10829; sglang PR #37768).
- F5 2.29.0-2.29.1: no source read; treated like 2.28 (inference, marked unverified in the table).
- F6 2.31.0-2.31.2 and 2.32.0-2.32.6: no release tag to read, verified from the published binaries instead
  (docs/nccl-audit.md, maint/nccl_audit.py: every sm_90 symmetric kernel carries ACQBULK; receive alone on
  branch dev): like 2.30.7.
- F7 anything the audit has not read (2.31.3+, 2.32.7+, newer): unverified, so the plugin engages nothing of its own.
"""

import json
from pathlib import Path


import pytest

from sglang_cp_symm.engine.nccl_policy import TABLE, NcclVersion, decide, line_for

V = NcclVersion.parse


def test_version_forms():
    assert V("2.28.9") == V(22809) == V((2, 28, 9)) == (2, 28, 9)
    with pytest.raises(ValueError):
        V("2.28")


def test_table_is_contiguous_and_total():
    for a, b in zip(TABLE, TABLE[1:]):
        assert a.last < b.first
    for v in ["2.0.0", "2.27.2", "2.27.3", "2.28.0", "2.29.1", "2.29.2", "2.30.6", "2.30.7", "3.1.0"]:
        covering = [line for line in TABLE if line.covers(V(v))]
        assert len(covering) == 1 and line_for(V(v)) is covering[0], (v, covering)  # exactly one row, and that one


# (nccl, send requested, allow race) -> (patch outputs, stage send, kernel engaged, hazard?)   fact
ROWS = [
    ("2.26.5", True, False, False, False, False, False),   # F1: nothing to register
    ("2.27.3", False, False, True, False, False, False),   # F2: output alone -> no symmetric kernel, safe
    ("2.27.7", True, False, True, True, True, False),      # F2 + no race in 2.27: staging engages it
    ("2.28.9", False, False, True, False, False, True),    # F2: output alone engages nothing (slow, safe)
    ("2.28.9", True, False, True, False, False, True),     # F4: staging would engage the racy kernel: refused
    ("2.28.9", True, True, True, True, True, True),        # F4: operator accepted the risk
    ("2.29.1", True, False, True, False, False, True),     # F5 + F4
    ("2.29.7", False, False, False, False, False, True),   # F3 + F4: output alone would engage the racy kernel: held
    ("2.29.7", False, True, True, False, True, True),      # F3 + F4, accepted
    ("2.30.6", True, False, False, False, False, True),    # F3 + F4: staging not needed, outputs held
    ("2.30.7", True, False, True, False, True, False),     # F3 + fix: output alone engages a safe kernel
    ("2.30.99", False, False, True, False, True, False),   # the last verified line
    ("2.31.2", False, False, True, False, True, False),     # F6: audited, output alone engages a safe kernel
    ("2.32.3", True, False, True, False, True, False),      # F6: staging not needed
    ("2.32.6", False, True, True, False, True, False),      # F6: the newest audited
    ("2.31.3", False, False, False, False, False, False),   # F7: unverified, held
    ("2.32.7", True, True, False, False, False, False),     # F7: held whatever the switches
    ("3.1.0", False, False, False, False, False, False),    # F7: newer than the table
]


@pytest.mark.parametrize("nccl", ["2.31.3", "2.32.7", "2.33.0", "3.0.0"])
def test_a_newer_nccl_than_the_table_is_unverified_with_a_message_to_update(nccl):
    d = decide(V(nccl), send_requested=False, allow_race=False)
    assert line_for(V(nccl)).note == "unverified" and not line_for(V(nccl)).race
    assert "unverified" in d.reason and "update sglang-cp-symm" in d.recommendation


@pytest.mark.parametrize("nccl,send,allow,outputs,stage,engaged,hazard", ROWS)
def test_policy_row(nccl, send, allow, outputs, stage, engaged, hazard):
    d = decide(V(nccl), send_requested=send, allow_race=allow)
    assert (d.patch_outputs, d.stage_send, bool(d.kernel_engaged), d.hazard is not None) == (outputs, stage, engaged, hazard)
    assert d.source and d.reason
    if hazard and not allow:
        assert d.recommendation and "2.30.7" in d.recommendation


def test_race_only_on_hopper_or_later():
    assert decide(V("2.29.7"), False, False, sm90_or_later=False).patch_outputs
    assert decide(V("2.28.9"), True, False, sm90_or_later=False).stage_send


@pytest.mark.parametrize("send,allow", [(False, False), (True, False), (True, True)])
def test_an_unknown_nccl_holds_back_everything(send, allow):
    """Unknown means hold back: without the version nothing says whether a change engages a racy kernel."""
    d = decide(None, send_requested=send, allow_race=allow)
    assert not d.patch_outputs and not d.stage_send and d.nccl is None
    assert "could not be established" in d.line() and "SGLANG_NCCL_SO_PATH" in d.line()


def test_one_line_says_what_and_why():
    line = decide(V("2.28.9"), True, False).line()
    assert "NCCL 2.28.9" in line and "send staging off" in line and "hazard" in line and "2.30.7" in line


def test_2_29_7_names_its_hopper_slowdown_too():
    # 2.29.7 symmetric-kernel slowdown on Hopper, fixed in 2.30.7 (reported, NCCL issue #2058)
    assert "slowdown" in decide(V("2.29.7"), False, False).hazard
    assert "slowdown" not in decide(V("2.29.6"), False, False).hazard


AUDIT = Path(__file__).resolve().parents[2] / "docs" / "nccl-audit.json"


def test_every_audited_row_rests_on_an_audit_record_that_shows_the_fix_and_the_rule():
    """A row above the last tagged line is verified only if docs/nccl-audit.json shows, for the releases it covers,
    the race fix in every sm_90 symmetric kernel and AllGather's receive-alone rule; and it cites the record."""
    records = {r["version"]: r for r in json.loads(AUDIT.read_text())["records"]}
    audited_rows = [line for line in TABLE if line.first > V("2.30.99") and line.note != "unverified"]
    assert audited_rows, "no row rests on the audit"
    for line in audited_rows:
        covered = [r for v, r in records.items() if line.covers(V(v))]
        assert covered, f"row {line.first}-{line.last} has no audit record"
        assert "docs/nccl-audit.md" in line.source
        for record in covered:
            assert record["race_fix_in_every_kernel"] and record["kernels"]["total"] > 0
            assert record["source"]["rule"]["rule"] == "receive alone or both"
            assert not line.race and not line.needs_send_registered
            assert f"{record['version']}" in line.source


def test_the_audit_agrees_with_the_racy_rows():
    """The rows marked racy are exactly the audited releases whose kernels lack the fix."""
    for record in json.loads(AUDIT.read_text())["records"]:
        assert line_for(V(record["version"])).race is (not record["race_fix_in_every_kernel"]), record["version"]
