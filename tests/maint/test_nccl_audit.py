"""Stage A: the NCCL audit's parsing, on a tiny fixture, without the 200 MB wheels.

``fixtures/nvdisasm-sm90.txt`` is made of real ``nvdisasm`` 13.5.37 output lines (sm_90 cubins of
``nvidia-nccl-cu13``): the head of ``ncclSymkDevKernel_AllGather_TmaSTMC`` from 2.30.7 (with ``ACQBULK``),
the head of ``ncclSymkDevKernel_AllGather_ST`` from 2.28.9 (without), and non-code sections that name a
kernel (``.nv.info.*``) or follow one. The full run is ``python -m maint.nccl_audit`` (docs/nccl-audit.md).
"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from maint import nccl_audit as audit  # noqa: E402

FIXTURE = (Path(__file__).parent / "fixtures" / "nvdisasm-sm90.txt").read_text()
TMA = "_Z35ncclSymkDevKernel_AllGather_TmaSTMC21ncclSymkDevWorkArgs4K"
ST = "_Z30ncclSymkDevKernel_AllGather_ST21ncclSymkDevWorkArgs4K"


def test_each_kernel_code_section_is_judged_on_its_own_code():
    assert audit.symmetric_kernels(FIXTURE) == {TMA: True, ST: False}


def test_a_fence_outside_the_kernel_section_does_not_count():
    """ACQBULK in the section after a kernel (here a data section) is not that kernel's."""
    moved = FIXTURE.replace("        /*00a0*/                   ACQBULK ;\n", "")
    moved += "        /*00a0*/                   ACQBULK ;\n"
    assert audit.symmetric_kernels(moved) == {TMA: False, ST: False}


def test_kernel_names_and_families():
    assert audit.kernel_name(TMA) == "ncclSymkDevKernel_AllGather_TmaSTMC"
    assert audit.kernel_families(["ncclSymkDevKernel_AllReduce_AGxLL_R_sum_bf16",
                                  "ncclSymkDevKernel_AllReduce_AGxLL_R_sum_f32_profile",
                                  "ncclSymkDevKernel_AllGather_ST"]) == ["AllGather_ST", "AllReduce_AGxLL_R"]


def test_parameter_names_from_strings_and_header():
    # strings as they stand in libnccl.so.2 2.32.6 (NUL-separated); the header lines as nccl.h 2.32.6 defines them
    blob = (b"\x00NCCL_SYM_KERNEL set by environment to %s\x00NCCL_WIN_ENABLE\x00NCCL_SYMK_LL_SCRATCH_SIZE\x00"
            b"NCCL_ALGO\x00symKernelIdEnable\x00NCCL_SYM_\x00")
    assert audit.parameter_names(blob) == ["NCCL_SYMK_LL_SCRATCH_SIZE", "NCCL_SYM_KERNEL", "NCCL_WIN_ENABLE"]
    header = "#define NCCL_WIN_DEFAULT 0x00\n#define NCCL_WIN_GIN_ONLY 0x04\n  # define NCCL_WIN_CFT_COUNTED 0x08\n" \
             "/* NCCL_WIN_FAKE in a comment */\n#define NCCL_SPLIT_NOCOLOR -1\n"
    assert audit.header_names(header) == ["NCCL_WIN_CFT_COUNTED", "NCCL_WIN_DEFAULT", "NCCL_WIN_GIN_ONLY"]
    assert audit.fingerprints(blob)["unified tuning parses NCCL_SYM_KERNEL with NCCL_ALGO"]


def test_new_names_are_against_the_previous_version():
    records = [{"version": "2.30.7", "parameters": ["A"], "header_names": ["H"]},
               {"version": "2.31.2", "parameters": ["A", "B"], "header_names": ["H"]}]
    audit.new_names(records)
    assert records[0]["new_parameters"] is None and records[1]["new_parameters"] == ["B"]
    assert records[1]["new_header_names"] == [] and records[1]["compared_with"] == "2.30.7"


# The rule shapes as NCCL's source writes them (v2.28.9-1 symmetric_sched.cc:30, v2.30.7-1 sym_kernels.cc:610-611,
# dev sym_model.cc:304-305), reduced to the lines the patterns read.
BOTH = "x\n    if (task->sendWin && task->recvWin && (task->sendWin->winFlags & task->recvWin->winFlags & " \
       "NCCL_WIN_COLL_SYMMETRIC) && symAvailable) {\n"
PICK = "a\nb\n  } else if (coll == ncclFuncAllGather) {\n    if (winRegType != ncclSymSendRegRecvReg && " \
       "winRegType != ncclSymSendNonregRecvReg) kmask &= kernelMask_LL;\n"
MODEL = "1\n      (inputs->func == ncclFuncAllGather && inputs->winRegType != ncclSymSendRegRecvReg &&\n" \
        "       inputs->winRegType != ncclSymSendNonregRecvReg && (tuning_kmask & ncclSymkLLKernelMask()) == 0) ||\n"


@pytest.mark.parametrize("files,rule,where", [
    ({"src/scheduler/symmetric_sched.cc": BOTH}, "both", "src/scheduler/symmetric_sched.cc:2"),
    ({"src/sym_kernels.cc": PICK}, "receive alone or both", "src/sym_kernels.cc:3-4"),
    ({"src/tuning/sym_model.cc": MODEL}, "receive alone or both", "src/tuning/sym_model.cc:2-3"),
])
def test_the_registration_rule_and_its_lines(files, rule, where):
    found = audit.registration_rule(files)
    assert found[:2] == (rule, where)


def test_no_rule_is_said_when_none_matches():
    assert audit.registration_rule({"src/sym_kernels.cc": PICK.replace("ncclSymSendNonregRecvReg", "other")}) is None


def test_the_algo_rule_needs_both_the_zeroing_and_the_reenable():
    text = ("if ((algoStr && strlen(algoStr) > 0) || (symKernelIdStr && strlen(symKernelIdStr) > 0)) {\n"
            "  std::fill_n(algoEnable, N, 0);\n  std::fill_n(symKernelIdEnable, M, 0);\n}\n"
            "if (comm->tuningContext.forced[f] == 0 || x) continue;\n"
            "if ((a) || (symKernelId != C && symKernelIdEnable[f * C + symKernelId] != 0)) {\n")
    assert audit.algo_rule(text) == ("src/tuning/cost_model.cc:1-3", "src/tuning/cost_model.cc:5-6")
    assert audit.algo_rule(text.split("if (comm")[0]) is None


@pytest.mark.parametrize("bad", ["2.31", "2.x.1", "v2.31.2", "1" * 40])
def test_a_bad_version_is_one_line_and_exit_2(bad, capsys, tmp_path):
    assert audit.main([bad, "--json", str(tmp_path / "a.json"), "--md", str(tmp_path / "a.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nccl-audit: not an NCCL version") and len(err[0]) < 120


def test_the_committed_record_is_complete():
    """docs/nccl-audit.json holds each version the issue asked for, with hashes, command and date."""
    records = {r["version"]: r for r in json.loads((ROOT / "docs" / "nccl-audit.json").read_text())["records"]}
    assert {"2.28.9", "2.29.7", "2.30.7", "2.31.2", "2.32.6"} <= set(records)
    for record in records.values():
        assert len(record["sha256"]) == 64 and record["command"].startswith("python -m maint.nccl_audit")
        assert record["kernels"]["total"] == record["kernels"]["with_fence"] + record["kernels"]["without_fence"]
    md = (ROOT / "docs" / "nccl-audit.md").read_text()
    assert md == audit.render(sorted(records.values(), key=lambda r: audit.version_key(r["version"])))


def fake_record(version, fenced, params):
    return {"version": version, "wheel": f"nvidia_nccl_cu13-{version}-py3-none-manylinux_2_18_x86_64.whl",
            "sha256": "0" * 64, "tools": ["cuobjdump.whl", "nvdisasm.whl"],
            "kernels": {"arch": "sm_90", "total": 2, "with_fence": 2 if fenced else 0,
                        "without_fence": 0 if fenced else 2, "without": [] if fenced else ["k"],
                        "names": ["ncclSymkDevKernel_AllGather_ST", "ncclSymkDevKernel_AllReduce_AGxLL_R_sum_f32"]},
            "race_fix_in_every_kernel": fenced, "parameters": params, "header_names": ["NCCL_WIN_DEFAULT"],
            "fingerprints": {}, "source": {"ref": None, "what": "no NCCL repository given", "rule": None,
                                           "algo": None, "generate_py_sync_calls": None}}


def test_a_new_version_gets_its_row_from_one_run(monkeypatch, tmp_path, capsys):
    """The records already written stay; the new one is added in version order and compared with the one before."""
    out_json, out_md = tmp_path / "a.json", tmp_path / "a.md"
    old = fake_record("2.32.6", True, ["NCCL_SYM_KERNEL"])
    old.update(command="python -m maint.nccl_audit 2.32.6", date="2026-12-01")
    out_json.write_text(json.dumps({"records": [old]}))
    monkeypatch.setattr(audit, "tools", lambda cache: (None, None, []))
    monkeypatch.setattr(audit, "audit_version",
                        lambda v, cache, repo, tools: fake_record(v, False, ["NCCL_SYM_KERNEL", "NCCL_SYM_NEW"]))
    assert audit.main(["2.33.0", "--json", str(out_json), "--md", str(out_md), "--cache", str(tmp_path)]) == 0
    records = json.loads(out_json.read_text())["records"]
    assert [r["version"] for r in records] == ["2.32.6", "2.33.0"]
    assert records[0]["date"] == "2026-12-01" and records[1]["new_parameters"] == ["NCCL_SYM_NEW"]
    md = out_md.read_text()
    assert "| 2.33.0 | 0 of 2 | no | not read | not read | `NCCL_SYM_NEW` |" in md
    assert "Kernel families (type and profile variants folded): AllGather_ST, AllReduce_AGxLL_R." in md
    out_md.unlink()
    assert audit.main(["--render", "--json", str(out_json), "--md", str(out_md)]) == 0
    assert out_md.read_text() == md
