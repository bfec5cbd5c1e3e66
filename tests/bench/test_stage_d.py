"""Stage D's CPU dry run: the multi-GPU harness on real sglang releases, N = 2, 4, 8 ranks over gloo.

The harness (``bench/stage_d``) runs each release's own CP all-gather functions over sglang's own
``GroupCoordinator`` in every mode (unpatched, the bare PR #24040 backport, the plugin's default, send
staging, the race guard), over a sweep of totals not divisible by N with uneven shares, bf16 and fp8
payloads of DeepSeek-V3.2 and Qwen3-MoE shapes, every step under a deadline, and prints its table.
Faked, because no GPU exists here, exactly what the rehearsal fakes (``sglang_cp_symm.tools.rehearsal``):
sglang's ``SymmetricMemoryContext`` (a recorder of which group's context is open) and the CUDA kernel of
``sglang::reg_all_gather_into_tensor`` (gloo). So the kernel, bandwidth and pool columns read "n/a".

Started as CI starts it, ``ci/stage-d.sh --cpu --launcher spawn``: N = 2, 4, 8 forked from one process per
release (one import of sglang instead of N, for CI's two cores). The torchrun launch is what the one-GPU
device runs prove (docs/stage-d.md).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, release_dir, require_release

pytestmark = pytest.mark.release

KV = "cp_utils.cp_all_gather_reorganized_into_tensor_kv_cache"
HIDDEN = "cp_utils.cp_all_gather_reorganized_into_tensor"
RERANGE = "cp_utils.cp_all_gather_rerange_output (round-robin)"
ZIGZAG = "cp.zigzag ZigzagCPStrategy._all_gather_reorganized"
INTERLEAVE = "cp.interleave InterleaveCPStrategy._gather_interleaved_tensor"
INTERLEAVE_GATHER = "cp.interleave attn_cp_interleave_gather"
MODES = ["unpatched", "output-only", "default", "send", "guard"]


def dry_run(release: str, out: Path, nprocs=(2, 4, 8)) -> str:
    """The CPU dry run as CI runs it: ``ci/stage-d.sh --cpu --launcher spawn``; returns what it printed."""
    require_release(release)
    run = subprocess.run(["bash", "ci/stage-d.sh", "--cpu", "--launcher", "spawn", "--quick", "--release", release,
                          "--nproc", ",".join(map(str, nprocs)), "--out", str(out), "--", "--deadline", "120",
                          "--timeout", "400"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if not k.startswith("SGLANG_")})
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    return run.stdout


def rows(out: Path, n: int) -> dict:
    summary = json.loads((out / "cpu" / f"n{n}" / "summary.json").read_text())
    (table,) = summary["tables"]
    assert table["cp"] == str(n)
    return table["rows"]


def where(row: dict, gather: str, side: str) -> dict:
    return row["by_case"][gather][side]


def check_common(out: Path, text: str, n: int) -> dict:
    table = rows(out, n)
    assert list(table) == MODES
    for mode, row in table.items():
        assert row["hang"] == "no", (mode, row["hang"])
        assert row["cases"] > 0 and row["identical"] == row["cases"], (mode, row["failures"])
        assert row["ranks_reporting"] == n
        assert row["fp8_direct"].startswith("rejected")  # gloo has no float8; the bytes path is what runs
        assert row["symk_log"] is None and row["symk_trace"] is None
    assert f"N={n} ranks, CP {n}" in text
    assert len(list((out / "cpu" / f"n{n}").glob("rank*.json"))) == n
    return table


def test_dry_run_0_5_11(tmp_path):
    text = dry_run("0.5.11", tmp_path)
    tmp_path = tmp_path / "sglang-0.5.11"
    for n in (2, 4, 8):
        table = check_common(tmp_path, text, n)
        # the KV gather lacks the context in 0.5.11 (PR #24040 came in 0.5.12): outside unpatched, inside otherwise
        assert where(table["unpatched"], KV, "output") == {"-": 6}
        for mode in MODES[1:4]:
            assert where(table[mode], KV, "output") == {"context": 6}, mode
        for gather in (HIDDEN, RERANGE):  # upstream since PR #22914
            assert all(where(table[m], gather, "output") == {"context": 3} for m in MODES[:4]), gather
        # the race guard (judged as NCCL 2.30.4): no CP buffer in a context, upstream's included
        assert all("context" not in where(table["guard"], g, "output") for g in (KV, HIDDEN, RERANGE)), table["guard"]
        assert table["guard"]["status"]["guard"]["race_guard"]["engaged"]
        # send staging puts every gather's input in the context too, and only in that mode
        for gather in (KV, HIDDEN, RERANGE):
            assert where(table["send"], gather, "input") == {"context": 6 if gather == KV else 3}
            assert all("context" not in where(table[m], gather, "input") for m in MODES if m != "send")
        # the bare backport is the output edit alone; the plugin adds the CP group's own pool
        assert table["output-only"]["status"]["targets"] == {"cp_utils.reorganized_kv_cache": "patched (output (bare backport))"}
        assert table["default"]["status"]["targets"]["pool.attention_cp_registration"].startswith("patched")
    assert "kernel, bandwidth and pool columns need a GPU" in text
    assert "send default: undecided on CPU" in text


def test_dry_run_0_5_23(tmp_path):
    text = dry_run("0.5.23", tmp_path)
    tmp_path = tmp_path / "sglang-0.5.23"
    for n in (2, 4, 8):
        table = check_common(tmp_path, text, n)
        for mode in MODES:
            # zigzag opens its context for CUDA tensors only (zigzag.py 0.5.23:476-479)
            assert where(table[mode], ZIGZAG, "output") == {"-": 9}
        for mode in MODES[:4]:
            assert where(table[mode], INTERLEAVE, "output") == {"context": 9}
            assert where(table[mode], INTERLEAVE_GATHER, "output") == {"context": 3}
        assert table["output-only"]["note"].startswith("upstream already allocates every CP output")
        assert table["guard"]["judged"] == "2.30.4"  # 2.30.7 carries no race: the guard is judged as for 2.30.4
        guard = table["guard"]["status"]
        assert guard["guard"]["race_guard"]["engaged"], guard  # upstream's own contexts held out of windows
        assert "context" not in where(table["guard"], INTERLEAVE, "output"), guard
        assert "context" not in where(table["guard"], INTERLEAVE_GATHER, "output"), guard
    assert "send default: off for NCCL 2.30.7 (the policy stages nothing on this line" in text


def test_dry_run_0_5_18(tmp_path):
    if not (release_dir("0.5.18") / "sglang").is_dir():
        pytest.skip("sglang 0.5.18 has no environment here: it is in set \"all\" of ci/releases.txt, which only "
                    "`bash ci/test.sh --all-releases` builds; until it is built, no CPU run covers 0.5.18's "
                    "attn_cp_overlap group (built only by 0.5.18 and 0.5.19) with its cp_utils 4-argument gathers, "
                    "zigzag and interleave")
    out = tmp_path
    text = dry_run("0.5.18", out, nprocs=(2,))
    table = check_common(out / "sglang-0.5.18", text, 2)
    # 0.5.18: cp_utils' four-argument gathers through get_parallel(), zigzag, interleave (cp-sites B1)
    assert set(table["unpatched"]["by_case"]) == {HIDDEN, KV, RERANGE, ZIGZAG, INTERLEAVE}


