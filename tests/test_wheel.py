"""The wheel as it would be published: built from this checkout, read back, and judged by ``twine check``.

Stage A. ``pip wheel --no-index --no-deps --no-build-isolation .`` with the hatchling of ``.venv`` (no network),
then the archive itself is read: the whole package and the ``.pth`` line are in it, the Apache-2.0 text is in its
metadata, and nothing maintainer-only (``maint/``) or repository-only (``tests/``, ``bench/``, ``ci/``, ``patches/``,
``docs/``) is. ``twine check --strict`` reads the metadata as PyPI's upload does (the README as its long
description must render).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = "sglang_cp_symm"
PTH = "sglang_cp_symm_bootstrap.pth"
NOT_SHIPPED = ("maint", "tests", "bench", "ci", "patches", "docs")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-index", "--no-deps",
                             "--no-build-isolation", ".", "-w", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("sglang_cp_symm-*.whl")
    return built


def names(wheel: Path) -> list:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def read(wheel: Path, name: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(name)


def dist_info(wheel: Path) -> str:
    (folder,) = {n.split("/", 1)[0] for n in names(wheel) if n.split("/", 1)[0].endswith(".dist-info")}
    return folder


def test_the_whole_package_and_the_pth_are_in_the_wheel(wheel):
    shipped = {n for n in names(wheel) if n.startswith(f"{PACKAGE}/") and n.endswith(".py")}
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / PACKAGE).rglob("*.py")}
    assert shipped == source, f"missing: {sorted(source - shipped)}; extra: {sorted(shipped - source)}"
    assert read(wheel, PTH) == (ROOT / PTH).read_bytes()  # at the top of site-packages, as pip installs it
    entry_points = read(wheel, f"{dist_info(wheel)}/entry_points.txt").decode()
    assert "cp_symm = sglang_cp_symm.engine.plugin:register" in entry_points
    assert "sglang-cp-symm = sglang_cp_symm.__main__:main" in entry_points


def test_nothing_maintainer_only_or_repository_only_is_in_the_wheel(wheel):
    tops = {n.split("/", 1)[0] for n in names(wheel)}
    assert tops == {PACKAGE, PTH, dist_info(wheel)}, sorted(tops)
    leaked = [n for n in names(wheel) if any(f"/{d}/" in f"/{n}" for d in NOT_SHIPPED)]
    assert not leaked, leaked


def test_the_license_is_in_the_metadata(wheel):
    info = dist_info(wheel)
    metadata = read(wheel, f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    text = read(wheel, f"{info}/licenses/LICENSE")
    assert text == (ROOT / "LICENSE").read_bytes()
    assert text.lstrip().startswith(b"Apache License") and b"Version 2.0, January 2004" in text


def test_twine_check_passes(wheel):
    try:
        import twine  # noqa: F401
    except ImportError:
        message = "twine is not installed: .venv/bin/python -m pip install -r ci/base-requirements.txt"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0 and "PASSED" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
