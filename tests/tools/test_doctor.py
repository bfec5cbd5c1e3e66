"""Stage B: ``sglang-cp-symm doctor`` against a real installed release, and without sglang.

The doctor runs in a fresh interpreter where what is checked is the library it reads (the release's pinned NCCL,
read after its own ``import torch``): the report, the pins and the loaded NCCL, the NCCL settings, a fixed NCCL.
Where what is checked is what it makes of its arguments (``--check`` on a given ``--nccl``, the sizing, the rank
records, a bad input), it runs forked from the release's fork server (tests/forkserver.py: torch imported already,
which the doctor imports first anyway), about 0.5 s of CPU instead of 3.5 s a doctor."""

import json
import subprocess
import sys

import pytest

from conftest import nccl, run_python

pytestmark = pytest.mark.release

DOCTOR = "import sys; from sglang_cp_symm.__main__ import main; sys.exit(main(sys.argv[1:]))"


def doctor(release, *args, env=None, fresh=True):
    code = f"import sys; sys.argv[1:] = {list(args)!r}\n{DOCTOR}"
    return run_python(release, code, env=env, fresh=fresh)


def forked(release, *args, env=None):
    """The doctor in a process forked from the release's fork server (the module docstring says where)."""
    return doctor(release, *args, env=env, fresh=False)


def test_report_is_readable_and_json_is_valid_on_0_5_11():
    text = doctor("0.5.11", "doctor", "--nccl", "2.28.9", env={"SGLANG_CP_SYMM": "1"})
    assert text.returncode == 0, text.stderr
    for needle in ("sglang      0.5.11", "NCCL        2.28.9", "cp_utils.reorganized_kv_cache", "needs patch",
                   "upgrade NCCL to >= 2.30.7"):
        assert needle in text.stdout
    data = json.loads(doctor("0.5.11", "doctor", "--json", "--nccl", "2.30.7", env={"SGLANG_CP_SYMM": "1"}).stdout)
    kv = data["targets"]["cp_utils.reorganized_kv_cache"]
    assert data["sglang"] == "0.5.11" and data["entry_point"]["discoverable"]
    assert (kv["source"], kv["state"], kv["output_in_window"], kv["kernel"]) == ("needs patch", "patched", True, True)


@pytest.mark.parametrize("nccl,env,code", [
    ("2.30.7", {"SGLANG_CP_SYMM": "1"}, 0),                 # patches the KV gather, kernel engages
    ("2.28.9", {"SGLANG_CP_SYMM": "1"}, 1),                 # patches, but 2.28 needs the send buffer too
    ("2.30.7", {}, 0),                                       # plugin off: nothing to gate on
    ("2.30.7", {"SGLANG_CP_SYMM": "maybe"}, 1),             # a bad switch value
])
def test_check_exit_codes(nccl, env, code):
    assert forked("0.5.11", "doctor", "--check", "--nccl", nccl, env=env).returncode == code


def test_check_fails_where_the_plugin_would_patch_nothing():
    # 0.5.23: everything upstream; with NCCL 2.28 nothing engages and the plugin changes nothing.
    assert forked("0.5.23", "doctor", "--check", "--nccl", "2.28.9", env={"SGLANG_CP_SYMM": "1"}).returncode == 1


@pytest.mark.parametrize("value,filtered", [("other", True), (" , ", True), ("other, cp_symm", False), ("", False)])
def test_sglang_plugins_filter_is_reported(value, filtered):
    """As sglang's ``load_plugins`` reads ``SGLANG_PLUGINS``: any non-empty value is an allow-list (" , " an empty
    one); an empty value filters nothing."""
    out = forked("0.5.11", "doctor", env={"SGLANG_CP_SYMM": "1", "SGLANG_PLUGINS": value}).stdout
    assert ("SGLANG_PLUGINS does not list cp_symm" in out) is filtered, out


def test_without_sglang_it_says_so():
    result = subprocess.run([sys.executable, "-m", "sglang_cp_symm", "doctor", "--json"], capture_output=True, text=True)
    data = json.loads(result.stdout)
    assert result.returncode == 0 and data["sglang"] is None
    assert any("sglang is not installed" in f for f in data["findings"])


def test_sizing_of_the_warmup_and_the_pool():
    out = forked("0.5.12", "doctor", "--model", "qwen3-30b-a3b", "--cp-size", "2", "--tp", "4",
                 env={"SGLANG_CP_SYMM": "1"}).stdout
    for needle in ("longest forward   8192 tokens (chunked_prefill_size 8192 per DP rank, sglang's default",
                   "prompts           8192, then 4096, 2048, 512, 256 tokens",
                   "CP buffers        40.0 MiB at most at once (k 4.0 MiB, v 4.0 MiB, hidden_states 32.0 MiB); the "
                   "pre-allocation holds them: no growth expected",
                   "deadline          600 s (sglang's own warm-up budget, SGLANG_WARMUP_TIMEOUT unset); the start "
                   "waits at most 664 s",
                   "pre-allocation    large: the CP all-gathers need 0.04 GiB of the 4 GiB pre-allocated"):
        assert needle in out, out
    data = json.loads(forked("0.5.12", "doctor", "--json", "--model", "deepseek-v3.2", "--cp-size", "8", "--tp", "8",
                             "--chunked-prefill-size", "131072", "--prealloc-gb", "1").stdout)
    sizing = data["sizing"]
    assert sizing["longest_prompt"] == 131072 and sizing["prealloc"]["state"] == "too-small"
    assert sizing["longest_forward"]["tokens"] == 131072 and sizing["deadline"]["seconds"] == 600
    assert any("SGLANG_SYMM_MEM_PREALLOC_GB_SIZE=" in a for a in data["recommended"])


def test_sizing_with_chunked_prefill_off_warns_once_and_a_cap_says_what_it_leaves():
    """Chunking off on 0.5.12 with pages of 64 and a pool as large as the context: the KV admission, not the
    context, bounds the longest prompt (the table test checks the figure against the release's PrefillAdder)."""
    args = ("doctor", "--model", "qwen3-30b-a3b", "--cp-size", "2", "--tp", "4", "--chunked-prefill-size", "-1",
            "--page-size", "64", "--max-total-tokens", "40960")
    out = forked("0.5.12", *args, env={"SGLANG_CP_SYMM": "1"}).stdout
    assert ("longest forward   40894 tokens (the longest prompt the scheduler admits, KV admission: 40960 free "
            "tokens - 1 new token - 64 (one page, reserved per request from 0.5.11) - 1") in out, out
    assert "context 40960 from the model's max_position_embeddings" in out
    assert "CP buffers        199.7 MiB at most at once" in out and "no growth expected" in out  # 0.5.12: 4 GiB
    warnings = [line for line in out.splitlines() if "5.0x the 8192-token chunk" in line]
    assert len(warnings) == 1 and "SGLANG_CP_SYMM_WARMUP_TOKENS=<your longest prompt>" in warnings[0]
    data = json.loads(forked("0.5.12", *args, "--json", env={"SGLANG_CP_SYMM": "1",
                                                             "SGLANG_CP_SYMM_WARMUP_TOKENS": "16384",
                                                             "SGLANG_CP_SYMM_WARMUP_TIMEOUT": "900"}).stdout)
    sizing = data["sizing"]
    assert sizing["longest_forward"] == {"tokens": 16384, "prompt": 16384, "scheduler_tokens": 40894, "chunk": -1,
                                         "source": sizing["longest_forward"]["source"], "capped": True, "note": ""}
    assert sizing["left_bytes"] == (40894 - 16384) * 5120 and sizing["warnings"] == []
    assert "forwards of 16385-40894 tokens need 119.7 MiB more CP buffers at once" in sizing["capped"]
    assert sizing["left_most_growths"] > 0 and sizing["left_most_bytes"] > sizing["left_bytes"]
    assert "the symmetric pre-allocation holds them" in sizing["capped"] and sizing["growth_bytes"] == 0
    own = json.loads(forked("0.5.11", *args, "--json", env={"SGLANG_CP_SYMM": "1",
                                                            "SGLANG_CP_SYMM_WARMUP_TOKENS": "16384"}).stdout)["sizing"]
    # 0.5.11: the CP group's own pool grows: k and v (8 MiB each) in one 20 MiB segment, hidden 64 MiB, small 2 MiB
    assert own["prealloc"]["state"] == "not-used-by-cp" and own["growth_bytes"] == (20 + 64 + 2) << 20
    assert f"by up to {own['left_most_bytes'] / 2**20:.1f} MiB in {own['left_most_growths']} growth(s) if such " \
        "lengths arrive in rising order" in own["capped"]
    assert sizing["deadline"]["seconds"] == 900 and sizing["deadline"]["source"] == "SGLANG_CP_SYMM_WARMUP_TIMEOUT=900"


def test_sizing_deadline_follows_sglangs_own_timeouts():
    base = ("doctor", "--json", "--model", "qwen3-30b-a3b", "--cp-size", "2", "--tp", "4")
    prefill = json.loads(forked("0.5.11", *base, "--disaggregation-mode", "prefill").stdout)["sizing"]["deadline"]
    assert prefill["seconds"] == 1800
    slow = json.loads(forked("0.5.11", *base, "--watchdog-timeout", "1000").stdout)["sizing"]["deadline"]
    assert slow["seconds"] == 1500 and "1.5 x --watchdog-timeout 1000 s" in slow["source"]
    env = json.loads(forked("0.5.11", *base, env={"SGLANG_WARMUP_TIMEOUT": "1200"}).stdout)["sizing"]["deadline"]
    assert env["seconds"] == 1200 and env["source"] == "SGLANG_WARMUP_TIMEOUT=1200"
    decode = forked("0.5.11", "doctor", *base[2:], "--disaggregation-mode", "decode").stdout
    assert "none: a PD decode server runs no prefill" in decode


@pytest.mark.parametrize("flags,env,skipped", [
    (("--enable-symm-mem",), {"SGLANG_CP_SYMM": "1"}, None),
    ((), {"SGLANG_CP_SYMM": "1"}, "--enable-symm-mem is off: there is no symmetric pool to fill"),
    (("--enable-symm-mem",), {"SGLANG_CP_SYMM": "1", "SGLANG_CP_SYMM_WARMUP": "0"}, "SGLANG_CP_SYMM_WARMUP is off"),
    (("--enable-symm-mem",), {}, "the plugin is off"),
])
def test_the_sizing_says_when_the_engine_would_skip_the_warmup(flags, env, skipped):
    """The doctor skips for the reasons the engine does (``warmup.switched_off``), and still shows the figures."""
    args = ("doctor", "--model", "qwen3-30b-a3b", "--cp-size", "2", "--tp", "4", *flags)
    sizing = json.loads(forked("0.5.12", *args, "--json", env=env).stdout)["sizing"]
    assert sizing.get("skipped") == skipped and sizing["longest_prompt"] == 8192
    line = [row for row in forked("0.5.12", *args, env=env).stdout.splitlines() if "skipped  " in row]
    assert line == ([] if skipped is None else [f"    skipped           {skipped}: the engine sends none of this; "
                                                 "with it on:"])


def test_sizing_on_0_5_11_says_the_cp_pool_is_the_plugins_own_and_dp_attention_halves_the_chunk():
    out = forked("0.5.11", "doctor", "--model", "qwen3-30b-a3b", "--cp-size", "2", "--tp", "4", "--dp", "2",
                 "--enable-dp-attention", "--chunked-prefill-size", "8192", env={"SGLANG_CP_SYMM": "1"}).stdout
    assert "longest forward   4096 tokens (chunked_prefill_size 4096 per DP rank)" in out
    assert "prompts           4096, then 2048, 1024, 512, 256 tokens" in out
    assert "not-used-by-cp: on sglang 0.5.11 the plugin gives the CP group its own pool" in out


def test_bad_sizing_input_is_one_clear_message():
    bad = forked("0.5.11", "doctor", "--cp-size", "0")
    assert bad.returncode == 2 and "'0' is not a positive whole number" in bad.stderr
    out = forked("0.5.11", "doctor", "--cp-size", "2", "--model", "nope").stdout
    assert "sizing: --model 'nope' is neither a preset" in out
    out = forked("0.5.11", "doctor", "--cp-size", "2", "--chunked-prefill-size", "-1").stdout
    assert "chunked prefill is off (-1) and no context length is known" in out


def test_ranks_of_the_last_launch_and_the_uneven_one(tmp_path):
    from sglang_cp_symm.engine import watchdog as wd

    run_dir = str(tmp_path)
    env = {"SGLANG_CP_SYMM_REPORT_DIR": run_dir, wd.RUN_ID: "launch-1"}
    write = """
import os
from sglang_cp_symm.engine import watchdog as wd
for rank, segments, late in (("rank 0 (tp 0)", 3, 0), ("rank 1 (tp 1)", 4, 1)):
    dog = wd.PoolWatchdog(reserved=lambda: 0, pools=dict, stats=dict)
    dog.rank, dog.rank_info = rank, {"pp_rank": 0}
    dog.known = {"cp": {"segments": segments, "bytes": segments << 21}}
    dog.warmup.prompts, dog.warmup.seconds = [8192, 910], 1.25
    dog.counts[wd.SERVING] = late
    wd.write_rank_record(dog)
"""
    assert run_python(None, write, env=env).returncode == 0
    result = forked("0.5.11", "doctor", "--ranks", run_dir, "--check", env={"SGLANG_CP_SYMM": "1"})
    assert result.returncode == 1
    for needle in ("rank-0--tp-0-", "warm-up [8192, 910] in 1.25 s, 3 segment(s), 0 growth(s) after warm-up",
                   "ranks hold different numbers of symmetric pool segments", "pool growths after the warm-up"):
        assert needle in result.stdout, result.stdout
    empty = forked("0.5.11", "doctor", "--ranks", str(tmp_path / "none"), "--check", "--nccl", "2.30.7",
                   env={"SGLANG_CP_SYMM": "1"})
    assert empty.returncode == 0 and "none recorded" in empty.stdout and "no rank records here" in empty.stdout


@pytest.mark.parametrize("release,pinned_torch,pinned_nccl", [("0.5.21", "2.13.0", "2.29.7"), ("0.5.17", "2.11.0", "2.28.9")])
def test_the_doctor_names_the_pins_the_loaded_nccl_and_the_fix_on_a_racy_line(release, pinned_torch, pinned_nccl):
    """Issue 16: the pins of the installed release, the NCCL loaded (resolved as the runtime does), the exact fix,
    and the race guard, also with the plugin off (then it says nothing keeps upstream's gathers off the kernel)."""
    off = json.loads(doctor(release, "doctor", "--json").stdout)  # run_python: the release's pinned NCCL
    assert off["pins"] == {"known": True, "torch": pinned_torch, "nccl": pinned_nccl, "nccl_wheel": "nvidia-nccl-cu13",
                           "loaded": pinned_nccl, "differs": False, "fix": off["pins"]["fix"]}
    assert off["pins"]["fix"].startswith('pip install "nvidia-nccl-cu13>=2.30.7"') and "SGLANG_NCCL_SO_PATH" in off["pins"]["fix"]
    assert off["race_guard"]["engaged"] and not off["race_guard"]["plugin_on"]
    assert any(f.startswith("race: ") and "plugin is off" in f for f in off["findings"])
    on_json = json.loads(doctor(release, "doctor", "--json", env={"SGLANG_CP_SYMM": "1"}).stdout)
    for report in (off, on_json):  # the fix is said once, in the race's finding, not again with the pins
        assert sum(report["pins"]["fix"] in f for f in report["findings"]) == 1, report["findings"]
    on = doctor(release, "doctor", env={"SGLANG_CP_SYMM": "1"}).stdout
    assert f"pins        torch {pinned_torch}, NCCL {pinned_nccl} (nvidia-nccl-cu13); loaded {pinned_nccl}" in on
    assert "race guard  engaged: NCCL" in on and "no (race guard)" in on
    upgraded = json.loads(doctor(release, "doctor", "--json", env={"SGLANG_CP_SYMM": "1", **nccl("2.30.7")}).stdout)
    assert upgraded["pins"]["differs"] and "fix" not in upgraded["pins"] and not upgraded["race_guard"]["engaged"]
    assert any("NCCL 2.30.7 is loaded, not the" in f for f in upgraded["findings"])


@pytest.mark.parametrize("env,needle,engaged", [
    ({"NCCL_WIN_ENABLE": "0"}, "NCCL env    NCCL_WIN_ENABLE=0: symmetric windows and kernels off", False),
    ({"NCCL_SYM_NOWIN_ENABLE": "1"}, "! race guard not held: NCCL_SYM_NOWIN_ENABLE=1", True),
    ({"NCCL_SYM_KERNEL": "AllGather_LL"}, "! race guard not held: NCCL_SYM_KERNEL=AllGather_LL", True),
    ({"NCCL_ALGO": "Ring"}, "NCCL env    NCCL_ALGO=Ring: legacy algorithms only", True)])
def test_the_doctor_reads_the_nccl_settings_that_change_the_verdict(env, needle, engaged):
    out = doctor("0.5.21", "doctor", env={"SGLANG_CP_SYMM": "1", **env}).stdout
    assert needle in out, out
    assert ("race guard  engaged" in out) is engaged, out


def _racy_pinned():
    from sglang_cp_symm.engine.nccl_policy import NcclVersion, line_for
    from sglang_cp_symm.pins import pin_for
    from sglang_cp_symm.releases import Release

    from conftest import PROOF_RELEASES

    return [r for r in PROOF_RELEASES
            if pin_for(Release.parse(r)) and line_for(NcclVersion.parse(pin_for(Release.parse(r)).nccl)).race]


@pytest.mark.parametrize("release", _racy_pinned())
def test_on_a_racy_pinned_nccl_check_fails_whenever_symmetric_memory_is_on(release):
    """Issue 21: the race is in every symmetric kernel (the TP all-reduce's too), so with --enable-symm-mem the
    doctor says what stays exposed and the two real fixes, and --check exits 1, with the plugin on or off. The NCCL is
    the one the release's torch pins, read through the engine's own library path (the libnccl stand-in). Forked
    from the release's fork server (torch already imported, as the doctor imports it before it reads the library):
    the fresh doctor reads the pinned NCCL in the tests above and in tests/test_bootstrap.py."""
    for env in ({"SGLANG_CP_SYMM": "1"}, {}):
        result = forked(release, "doctor", "--check", "--enable-symm-mem", env=env)
        assert result.returncode == 1, (env, result.stdout, result.stderr[-2000:])
        out = " ".join(result.stdout.split())
        for needle in ("TP all-reduce and reduce-scatter", "Hopper and Blackwell", "holds only the CP and DCP groups",
                       'pip install "nvidia-nccl-cu13>=2.30.7"', "run without --enable-symm-mem",
                       "sglang PR #37768, open"):
            assert needle in out, (needle, result.stdout)
        assert out.index('pip install "nvidia-nccl-cu13>=2.30.7"') < out.index("run without --enable-symm-mem")
    quiet = forked(release, "doctor", "--check", env={})  # symmetric memory not said to be on, plugin off
    assert quiet.returncode == 0 and "if the server runs with --enable-symm-mem" in " ".join(quiet.stdout.split())


def test_on_a_fixed_nccl_symmetric_memory_is_no_reason_to_fail():
    result = doctor("0.5.23", "doctor", "--check", "--enable-symm-mem", env={"SGLANG_CP_SYMM": "1"})
    assert "TP all-reduce" not in result.stdout and "race:" not in result.stdout, result.stdout
