"""Stage B (source level): set "ci" of ci/releases.txt proves every target shape of every release 0.5.6-0.5.23,
and ci/releases.txt names every supported release with its pins.

Read from the published wheels (``ci/fetch-wheels.sh``, ``.cache/wheels``) without importing sglang
(``maint/release_shapes.py``). A new sglang release whose target code, metadata fields or
``get_parallel()`` differ from every CI release fails here until a release of that shape joins the set.
"""

from __future__ import annotations

import os

import pytest

from conftest import ROOT, release_set

pytestmark = pytest.mark.release

WHEELS = ROOT / ".cache" / "wheels"


def wheels():
    found = sorted(WHEELS.glob("sglang-*.whl"))
    if not found:
        message = "no wheels in .cache/wheels: run ci/fetch-wheels.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_every_target_shape_of_every_release_is_proved_on_a_ci_release():
    from maint.release_shapes import coverage

    rows = coverage(wheels(), release_set("ci"))
    assert len([r for r in rows if ".post" not in r["release"]]) == 18
    unproved = {r["release"]: r["uncovered"] for r in rows if r["uncovered"]}
    assert not unproved, f"target shapes no release of set 'ci' proves (add one to ci/releases.txt): {unproved}"


def test_the_shapes_see_the_changes_the_register_records():
    """Sanity of the shape reading: the fixes and signature changes of the register are visible in it."""
    from maint.release_shapes import coverage

    change = {r["release"]: r["change"] for r in coverage(wheels(), release_set("ci"))}
    assert "cp_utils.reorganized_kv_cache code" in change["0.5.12"]  # sglang PR #24040
    assert "cp_utils.reorganized code" in change["0.5.13"]  # total_len dropped
    assert "+cp.zigzag" in change["0.5.14"] and "+cp.interleave" in change["0.5.17"]
    assert "get_parallel() stamped" in change["0.5.20"]
    assert change["0.5.15"] == "same as the previous release"


def test_releases_txt_names_every_supported_release_with_a_set_and_a_reason():
    from sglang_cp_symm.releases import Release
    from sglang_cp_symm.targets import FIRST_SUPPORTED, LAST_SUPPORTED

    lines = [line for line in (ROOT / "ci" / "releases.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    names = [line.split()[0] for line in lines]
    expected = [f"0.5.{n}" for n in range(FIRST_SUPPORTED.patch, LAST_SUPPORTED.patch + 1)]
    assert names == expected
    for line in lines:
        fields = line.split("#", 1)[0].split()
        assert fields[1] in ("ci", "all"), line
        assert "#" in line and line.split("#", 1)[1].strip(), f"no reason for the pins of {fields[0]}"
        assert any(p.startswith("transformers==") for p in fields[2:]), line
    assert release_set("all") == expected and set(release_set("ci")) < set(expected)
    assert Release.parse(release_set("ci")[0]) == FIRST_SUPPORTED
