"""Stage B: patches/ and the release sweep, against the real published wheels.

- every published sglang wheel from 0.5.1 to the register's last release (post releases too) is read
  at the source level, and every target is where the register says, in the state it says;
- patches/ is exactly what the generator makes from the register (no drift, no hand edits);
- every patch applies cleanly to its release's files, and to that release's post releases;
- a source tree patched with the diff behaves like the runtime-patched one: the same allocations in
  the symmetric context and the same outputs, across real processes (the rehearsal, see
  test_cp_gather_proof.py for what it fakes and why).
Wheels come from ci/fetch-wheels.sh (.cache/wheels).
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, last_line, release_dir, run_python

pytestmark = pytest.mark.release

WHEELS = ROOT / ".cache" / "wheels"
PATCHES = ROOT / "patches"


def wheels():
    found = sorted(WHEELS.glob("sglang-*.whl"))
    if not found:
        message = "no wheels in .cache/wheels: run ci/fetch-wheels.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def version_of(wheel: Path) -> str:
    return re.match(r"sglang-([0-9][^-]*)-", wheel.name).group(1)


def test_every_published_release_matches_the_register():
    from maint.patches import wheel_reader
    from maint.source_survey import survey
    from sglang_cp_symm.targets import is_supported
    from sglang_cp_symm.releases import Release

    checked, wrong = [], []
    for wheel in wheels():
        release = Release.parse(version_of(wheel))
        report = survey(wheel_reader(wheel), release)
        if not is_supported(release):
            continue
        checked.append(version_of(wheel))
        for name, r in report.items():
            if r["state"] != r["expected"]:
                wrong.append(f"sglang {version_of(wheel)}: {name} is {r['state']} ({r['detail']}), register says {r['expected']}")
    assert not wrong, "\n".join(wrong)
    assert {"0.5.6", "0.5.8", "0.5.9", "0.5.10", "0.5.11", "0.5.23"} <= set(checked)


def test_patches_are_regenerated_byte_identical(tmp_path):
    from maint.patches import write_patches

    wheels()
    written = write_patches(WHEELS, tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in written}
    committed = {p.relative_to(PATCHES): p.read_bytes() for p in PATCHES.glob("sglang-*/*.patch")}
    assert sorted(fresh) == sorted(committed), \
        "patches/ differs from the register: run python -m maint.patches --wheel-dir .cache/wheels"
    drifted = [str(p) for p in fresh if fresh[p] != committed[p]]
    assert not drifted, f"regenerate patches/: {drifted}"


def _unpack(wheel: Path, dest: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(dest, [n for n in archive.namelist() if n.startswith("sglang/srt/")])
    return dest


def _git_apply(patch: Path, tree: Path, check: bool) -> subprocess.CompletedProcess:
    args = ["git", "apply", "-p1"] + (["--check"] if check else []) + [str(patch)]
    return subprocess.run(args, cwd=tree, capture_output=True, text=True)


def test_every_patch_applies_cleanly_to_its_release_and_posts(tmp_path):
    by_release = {}
    for wheel in wheels():
        base = ".".join(version_of(wheel).split(".")[:3])
        by_release.setdefault(re.sub(r"(post|rc|dev).*$", "", base).rstrip("."), []).append(wheel)
    failures, applied = [], 0
    for folder in sorted(PATCHES.glob("sglang-*")):
        release = folder.name[len("sglang-"):]
        assert release in by_release, f"no wheel for {folder.name}"
        for wheel in by_release[release]:
            tree = _unpack(wheel, tmp_path / wheel.name)
            for patch in sorted(folder.glob("*.patch")):
                result = _git_apply(patch, tree, check=False)
                if result.returncode:
                    failures.append(f"{patch.relative_to(ROOT)} on {wheel.name}: {result.stderr.strip()}")
                    break
                applied += 1
    assert not failures, "\n".join(failures)
    assert applied >= len(list(PATCHES.glob("sglang-*/*.patch")))


@pytest.mark.parametrize("release,series", [("0.5.10", ["0001"]), ("0.5.11", ["0001"]), ("0.5.9", ["0001"]),
                                            ("0.5.8", ["0001"]), ("0.5.8", ["0001", "0002"]),
                                            ("0.5.10", ["0001", "0002"]), ("0.5.12", ["0002"])])
def test_patched_source_tree_behaves_like_the_runtime_patch(tmp_path, release, series):
    """Apply the diff to a copy of the release's own sglang, run it with the plugin OFF, and find what the
    runtime patch gives: every gather's output (and, with 0002, input) in the CP symmetric context."""
    tree = tmp_path / "site"
    shutil.copytree(release_dir(release) / "sglang", tree / "sglang")
    for prefix in series:
        (patch,) = (PATCHES / f"sglang-{release}").glob(f"{prefix}-*.patch")
        result = _git_apply(patch, tree, check=False)
        assert result.returncode == 0, result.stderr
    send = "0002" in series
    out = last_line(run_python(release, f"""
        import json, sys
        sys.path.append({str(ROOT)!r})  # maint/ from the checkout, after the installed sglang_cp_symm
        from maint import rehearsal_cases
        if __name__ == "__main__":
            print(json.dumps(rehearsal_cases.run(cp_size=3, cases=9, seed=5, patch=False)))
    """, env={"PYTHONPATH_PREPEND": str(tree)}, timeout=600, fresh=False))
    reports = json.loads(out)
    for report in reports.values():
        assert "error" not in report, report.get("error")
        for case in report["results"]:
            source_patched = case["unpatched"]  # the plugin is off: this is the patched source itself
            assert source_patched["equal_expected"], case
            assert source_patched["output_in_context"], case
            assert source_patched["input_in_context"] is send, case
            assert len(source_patched["inside"]) == (2 if send else 1), source_patched["inside"]


def test_every_published_release_has_the_places_the_warmup_and_watchdog_attach():
    """The register's hooks (targets.HOOKS): each needle in its module, on every supported wheel."""
    from maint.patches import wheel_reader
    from maint.source_survey import module_path
    from sglang_cp_symm.targets import HOOKS, is_supported
    from sglang_cp_symm.releases import Release

    missing, checked = [], 0
    for wheel in wheels():
        release = Release.parse(version_of(wheel))
        if not is_supported(release):
            continue
        read = wheel_reader(wheel)
        for hook in HOOKS:
            if hook.applies_to(release):
                text = read(module_path(hook.module))
                checked += 1
                if text is None or hook.needle not in text:
                    missing.append(f"sglang {version_of(wheel)}: {hook.name} ({hook.needle!r} in {hook.module})")
    assert not missing, "\n".join(missing)
    assert checked >= 5 * 20


def test_named_warmups_run_before_the_server_reports_ready_in_every_release():
    """The HTTP server's lifespan awaits the named warm-ups (execute_warmups) before it starts the thread
    (_wait_and_warmup) that runs sglang's general warm-up and sets ServerStatus.Up; the lifespan runs after
    the schedulers reported ready, which they do after model loading, CUDA-graph capture and the pool
    pre-allocation. Checked in the source of every supported wheel."""
    import ast

    from maint.patches import wheel_reader
    from sglang_cp_symm.targets import is_supported
    from sglang_cp_symm.releases import Release

    wrong, checked = [], 0
    for wheel in wheels():
        if not is_supported(Release.parse(version_of(wheel))):
            continue
        read = wheel_reader(wheel)
        tree = ast.parse(read("sglang/srt/entrypoints/http_server.py"))
        functions = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        first = {}
        for node in ast.walk(functions["lifespan"]):
            if isinstance(node, ast.Name) and node.id in ("execute_warmups", "_wait_and_warmup"):
                first[node.id] = min(first.get(node.id, node.lineno), node.lineno)
        sets_up = any(isinstance(n, ast.Attribute) and n.attr == "Up" for n in ast.walk(functions["_wait_and_warmup"]))
        checked += 1
        if not (first.get("execute_warmups", 10**9) < first.get("_wait_and_warmup", 0) and sets_up):
            wrong.append(f"{version_of(wheel)}: {first}, _wait_and_warmup sets Up: {sets_up}")
    assert not wrong, "\n".join(wrong)
    assert checked >= 20
