"""README tells the truth: every tagged sample output is what its command prints now, every quoted figure is in
its record (``ci/readme.py``; a drift fails here, ``python3 ci/readme.py --update`` rewrites the output blocks).

Also the checker itself, on a scratch file: it finds a drift, a figure missing from the record, an untagged
block it must leave alone, and ``--update`` writes the real output.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

CHECKER = ROOT / "ci" / "readme.py"


def checker(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(CHECKER), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


@pytest.mark.release
def test_every_checked_block_of_readme_matches_what_produces_it():
    result = checker("README.md", "docs/coverage.md")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    listed = checker("README.md", "--list").stdout.splitlines()
    kinds = {line.split(": ")[1] for line in listed}
    assert {"output", "figures"} <= kinds and len(listed) >= 7, listed


def test_the_checker_finds_drift_and_updates(tmp_path):
    record = tmp_path / "record.md"
    record.write_text("measured: 12.5 us and 3-4 ms\n")
    page = tmp_path / "page.md"
    page.write_text(
        "intro\n\n<!-- output: printf 'one\\ntwo\\n' -->\n```\none\nthree\n```\n\n"
        "```\nuntagged stays\n```\n\n"
        f"<!-- figures: {record} -->\nit costs 12.5 us, 3-4 ms and 9 us\n<!-- /figures -->\n")
    result = checker(page)
    assert result.returncode == 1
    assert "-three" in result.stdout and "+two" in result.stdout
    assert "9 is not in" in result.stdout and "12.5 is not in" not in result.stdout
    checker(page, "--update")
    text = page.read_text()
    assert "```\none\ntwo\n```" in text and "untagged stays" in text
    again = checker(page)
    assert again.returncode == 1 and "[ok]" in again.stdout and "9 is not in" in again.stdout
