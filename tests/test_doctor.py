"""Stage B: ``sglang-cp-symm doctor`` against a real installed release, and without sglang."""

import json
import subprocess
import sys

import pytest

from conftest import run_python

pytestmark = pytest.mark.release

DOCTOR = "import sys; from sglang_cp_symm.__main__ import main; sys.exit(main(sys.argv[1:]))"


def doctor(release, *args, env=None):
    code = f"import sys; sys.argv[1:] = {list(args)!r}\n{DOCTOR}"
    return run_python(release, code, env=env)


def test_report_is_readable_and_json_is_valid_on_0_5_11():
    text = doctor("0.5.11", "doctor", "--nccl", "2.28.9", env={"SGLANG_CP_SYMM": "1"})
    assert text.returncode == 0, text.stderr
    for needle in ("sglang      0.5.11", "NCCL        2.28.9", "cp_utils.reorganized_kv_cache", "needs patch",
                   "upgrade NCCL to >= 2.30.7"):
        assert needle in text.stdout
    data = json.loads(doctor("0.5.11", "doctor", "--json", "--nccl", "2.30.7", env={"SGLANG_CP_SYMM": "1"}).stdout)
    kv = data["targets"]["cp_utils.reorganized_kv_cache"]
    assert data["sglang"] == "0.5.11" and data["entry_point"]["discoverable"]
    assert kv["source"] == kv["expected"] == "needs patch" and kv["kernel"] is True


@pytest.mark.parametrize("nccl,env,code", [
    ("2.30.7", {"SGLANG_CP_SYMM": "1"}, 0),                 # patches the KV gather, kernel engages
    ("2.28.9", {"SGLANG_CP_SYMM": "1"}, 1),                 # patches, but 2.28 needs the send buffer too
    ("2.30.7", {}, 0),                                       # plugin off: nothing to gate on
    ("2.30.7", {"SGLANG_CP_SYMM": "maybe"}, 1),             # a bad switch value
])
def test_check_exit_codes(nccl, env, code):
    assert doctor("0.5.11", "doctor", "--check", "--nccl", nccl, env=env).returncode == code


def test_check_fails_where_the_plugin_would_patch_nothing():
    # 0.5.23: everything upstream; with NCCL 2.28 nothing engages and the plugin changes nothing.
    assert doctor("0.5.23", "doctor", "--check", "--nccl", "2.28.9", env={"SGLANG_CP_SYMM": "1"}).returncode == 1


def test_sglang_plugins_filter_is_reported():
    out = doctor("0.5.11", "doctor", env={"SGLANG_CP_SYMM": "1", "SGLANG_PLUGINS": "other"}).stdout
    assert "SGLANG_PLUGINS does not list cp_symm" in out


def test_without_sglang_it_says_so():
    result = subprocess.run([sys.executable, "-m", "sglang_cp_symm", "doctor", "--json"], capture_output=True, text=True)
    data = json.loads(result.stdout)
    assert result.returncode == 0 and data["sglang"] is None
    assert any("sglang is not installed" in f for f in data["findings"])
