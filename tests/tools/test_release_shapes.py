"""Stage B (source level): set "ci" of ci/releases.txt proves every release 0.5.6-0.5.23 by its digest, and
ci/releases.txt names every supported release with its pins.

Read from the published wheels (``ci/fetch-wheels.sh``, ``.cache/wheels``; ``CP_SYMM_WHEELS`` names another
folder) without importing sglang (``maint.release_shapes``). A release's digest covers the register's
targets and what the proof and the race guard read besides them (the guarded groups' construction and names, the
coordinator, the allocator and its context, the DCP gathers, ``get_parallel()``): a release whose digest no
release of set "ci" has fails here until it joins the set. The planted-fault tests copy a real wheel and edit its
``parallel_state.py``: a changed attention-CP partition must fail, comments and an unrelated group's edit must not.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, release_set

pytestmark = pytest.mark.release

WHEELS = Path(os.environ.get("CP_SYMM_WHEELS") or ROOT / ".cache" / "wheels")
PARALLEL_STATE = "sglang/srt/distributed/parallel_state.py"


def wheels():
    found = sorted(WHEELS.glob("sglang-*.whl"))
    if not found:
        message = f"no wheels in {WHEELS}: run ci/fetch-wheels.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def rows():
    from maint.release_shapes import coverage

    return coverage(wheels(), release_set("ci"))


def unproved(rows) -> list:
    """'release (digest; what changed)' for each release whose digest no release of set "ci" has."""
    return [f"{r['release']} (digest {r['digest']}; {r['change']})" for r in rows if r["unproved"]]


def test_every_release_has_the_digest_of_a_release_of_set_ci(rows):
    assert len([r for r in rows if ".post" not in r["release"]]) == 18
    missing = unproved(rows)
    assert not missing, ("releases whose digest no release of set 'ci' has: put a release in set 'ci' of "
                         "ci/releases.txt and build it (bash ci/envs.sh X); a post release that differs from its "
                         "release has no environment here: prove it by hand and say so in docs/coverage.md. "
                         f"{missing}")


def test_the_shapes_see_the_changes_the_register_and_the_guard_record(rows):
    """Sanity of the shape reading: the register's fixes and signature changes, and the groups the guard holds."""
    change = {r["release"]: r["change"] for r in rows}
    assert "cp_utils.reorganized_kv_cache code" in change["0.5.12"]  # sglang PR #24040
    assert "cp_utils.reorganized code" in change["0.5.13"]  # total_len dropped
    assert "+cp.zigzag" in change["0.5.14"] and "+cp.interleave" in change["0.5.17"]
    assert "get_parallel() stamped" in change["0.5.20"]
    assert "groups code" in change["0.5.9"]  # attention CP gets a group of its own (attn_cp)
    assert "groups code" in change["0.5.15"] and "guarded gathers new" in change["0.5.15"]  # the dcp group, layers/dcp
    assert "groups code" in change["0.5.18"]  # the attn_cp_overlap group
    assert "allocator code" in change["0.5.12"]  # sglang PR #21392: registration at context exit
    by_release = {r["release"]: r for r in rows}
    assert by_release["0.5.6.post2"]["proved_on"] == ["0.5.7"]  # its cp_all_gather_into_tensor_async is 0.5.7's


def plant(source: Path, folder: Path, version: str, edit) -> Path:
    """A copy of the wheel ``source`` as sglang ``version``, its parallel_state.py passed through ``edit``."""
    old = source.name.split("-")[1]
    out = folder / source.name.replace(f"-{old}-", f"-{version}-")
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == PARALLEL_STATE:
                text = data.decode()
                changed = edit(text)
                assert changed != text, "the planted edit did not apply"
                data = changed.encode()
            dst.writestr(info, data)
    return out


def contiguous_cp_ranks(text: str) -> str:
    """The attention-CP groups made of adjacent ranks instead of every attn_tp_size-th (0.5.9:1731)."""
    return text.replace("ranks = list(range(st, en, attn_tp_size))", "ranks = list(range(st, st + attn_cp_size))")


def unrelated_edits(text: str) -> str:
    """Comments, a docstring and the MoE-EP group's name: nothing the proof or the guard reads."""
    text = text.replace("    # Build the pipeline model-parallel groups.",
                        "    # Build the pipeline model-parallel groups (comment edited).\n    # another comment")
    text = text.replace('group_name="moe_ep",', 'group_name="moe_expert_parallel",')
    return text.replace('"""Distributed state.', '"""Distributed state (docstring edited).', 1)


def test_a_release_whose_parallel_state_changed_fails_and_an_unrelated_edit_does_not(tmp_path):
    """Two copies of the 0.5.9 wheel, identical in their target functions: one with the attention-CP group's
    ranks changed in parallel_state.py (a new digest outside set "ci": must fail), one with comments and the MoE
    group's name changed (the same digest as 0.5.9: proved there)."""
    from maint.release_shapes import SHARED, coverage

    base = next(w for w in wheels() if w.name.startswith("sglang-0.5.9-"))
    fault = plant(base, tmp_path, "0.5.9.post8", contiguous_cp_ranks)
    harmless = plant(base, tmp_path, "0.5.9.post9", unrelated_edits)
    rows = {r["release"]: r for r in coverage([base, fault, harmless], ["0.5.9"])}
    targets = [n for n in rows["0.5.9"]["shape"] if n not in SHARED]
    for version in ("0.5.9.post8", "0.5.9.post9"):
        assert {n: rows[version]["shape"][n] for n in targets} == {n: rows["0.5.9"]["shape"][n] for n in targets}
    assert rows["0.5.9.post9"]["digest"] == rows["0.5.9"]["digest"] and rows["0.5.9.post9"]["proved_on"] == ["0.5.9"]
    assert rows["0.5.9.post8"]["change"] == "groups code"
    assert unproved(rows.values()) == [f"0.5.9.post8 (digest {rows['0.5.9.post8']['digest']}; groups code)"]


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
    assert release_set("all") == expected and set(release_set("ci")) <= set(expected)
    assert Release.parse(release_set("ci")[0]) == FIRST_SUPPORTED
