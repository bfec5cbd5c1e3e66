"""Stage A: the index check's comparison, offline, and the command itself against a local index.

The local index is a real PEP 503 folder served to the real ``pip index versions`` through ``file://``
(no network here); it stands in for PyPI, which the CI step asks.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from maint import index_check as check  # noqa: E402


@pytest.mark.parametrize("available,known,expected", [
    (["0.5.23", "0.5.22", "0.5.15.post1"], "0.5.23", []),
    (["0.5.24", "0.5.23.post1", "0.5.23", "0.6.0"], "0.5.23", ["0.5.23.post1", "0.5.24", "0.6.0"]),
    (["2.15.0", "2.14.1", "2.13.0+cpu", "2.16.0+cpu", "2.16.0"], "2.15.0", ["2.16.0"]),  # local label: one release
    (["2.33.0rc1", "2.33.0.dev3", "2.32.6", "garbage", ""], "2.32.6", []),  # pre-releases and noise ignored
    (["2.32.10", "2.32.9"], "2.32.6", ["2.32.9", "2.32.10"]),  # numeric order, not text order
    (["3"], "2.99.99", ["3"]),
])
def test_newer(available, known, expected):
    assert check.newer(available, known) == expected


def test_what_the_checkout_knows():
    known = {dist: version for dist, version, _ in check.known()}
    assert known == {"sglang": "0.5.23", "torch": "2.15.0", "nvidia-nccl-cu13": "2.32.6"}


def test_pip_output_is_read_from_its_available_line():
    out = "torch (2.15.0)\nAvailable versions: 2.15.0, 2.14.1, 2.13.0+cpu\n"
    assert check.parse_pip_index(out) == ["2.15.0", "2.14.1", "2.13.0+cpu"]
    assert check.parse_pip_index("ERROR: No matching distribution found for x\n") == []


def test_one_warning_line_per_unknown_release_and_errors_never_fail(monkeypatch, capsys):
    answers = {"sglang": ["0.5.24", "0.5.23"], "torch": RuntimeError("network is unreachable"),
               "nvidia-nccl-cu13": ["2.32.6", "2.33.1"]}

    def fake(dist, timeout):
        if isinstance(answers[dist], Exception):
            raise answers[dist]
        return answers[dist]

    monkeypatch.setattr(check, "index_versions", fake)
    assert check.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [l for l in lines if l.startswith("index-check: warning:")] == [
        "index-check: warning: sglang 0.5.24 is on the index, newer than 0.5.23 (targets.LAST_SUPPORTED): "
        "check the release and extend the register (sglang_cp_symm/targets.py)",
        "index-check: warning: nvidia-nccl-cu13 2.33.1 is on the index, newer than 2.32.6 (nccl_policy.NEWEST_VERIFIED "
        "and the torch pins): run 'python -m maint.nccl_audit VERSION' and add its policy row"]
    assert "index-check: skipped torch: network is unreachable" in lines
    assert lines[-1].startswith("index-check: 2 of 3 distributions checked; 2 release(s) newer")


def write_index(root: Path, releases: dict) -> None:
    for dist, versions in releases.items():
        folder = root / dist
        folder.mkdir(parents=True)
        links = "".join(f'<a href="{dist.replace("-", "_")}-{v}.tar.gz">{dist}-{v}.tar.gz</a>\n' for v in versions)
        (folder / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")


def run_check(tmp_path: Path, index_url: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=index_url, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([sys.executable, "-m", "maint.index_check", "--timeout", str(timeout)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)


def test_the_command_against_a_local_index(tmp_path):
    write_index(tmp_path / "simple", {"sglang": ["0.5.23", "0.5.24"], "torch": ["2.15.0"],
                                      "nvidia-nccl-cu13": ["2.32.6"]})
    result = run_check(tmp_path, (tmp_path / "simple").as_uri())
    assert result.returncode == 0, result.stderr
    warnings = [l for l in result.stdout.splitlines() if l.startswith("index-check: warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("index-check: warning: sglang 0.5.24 is on the index")
    assert "3 of 3 distributions checked" in result.stdout


def test_no_index_is_one_line_per_distribution_and_exit_0(tmp_path):
    result = run_check(tmp_path, (tmp_path / "missing").as_uri())
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all(l.startswith("index-check: skipped ") for l in lines[:3]), lines
    assert "Traceback" not in result.stdout + result.stderr
