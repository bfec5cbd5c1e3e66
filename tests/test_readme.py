"""README tells the truth: every tagged sample output is what its command prints now, and every figure is the
value its key names in the record of the run that measured it (``ci/readme.py``; a drift fails here,
``python3 ci/readme.py --update`` rewrites the output blocks).

Also the checker itself: on the real README with planted faults (two figures swapped, one digit changed, a figure
moved to another row, the growth counts reversed, the test count changed), each of which must fail; on scratch
files, a record whose labelled value its run never printed, an unknown key, a figure without a key, and
``--update`` writing the real output of an output block.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

CHECKER = ROOT / "ci" / "readme.py"
README = ROOT / "README.md"


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


def test_readme_figures_equal_the_values_their_keys_name_in_the_records():
    """The real README, figures and quoted blocks only (no command runs): every block passes, and every block
    is checked by key (a block whose lines name no key would pass on nothing)."""
    result = checker("README.md", "--records")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    figures = [line for line in result.stdout.splitlines() if ": figures from " in line]
    assert len(figures) >= 5 and all(line.startswith("[ok]") for line in figures), result.stdout
    text = README.read_text()
    assert text.count("<!-- keys: ") >= 15
    for record in ("docs/ci-runs.md", "docs/overhead.md", "docs/gpu-runs.md"):
        listed = checker("--keys", record)
        assert listed.returncode == 0 and " = " in listed.stdout, (record, listed.stdout[-2000:])


def test_the_test_count_and_times_readme_states_are_the_ci_runs_record():
    """README's count of tests, its CI time and disk come from docs/ci-runs.md, whose labelled values are
    checked against that run's own output lines (``N passed, M skipped in ...``); README states the newest run."""
    keys = dict(line.split(" = ", 1) for line in checker("--keys", "docs/ci-runs.md").stdout.splitlines())
    record = (ROOT / "docs" / "ci-runs.md").read_text()
    passed = [k for k in keys if k.endswith(".passed")]
    assert passed, keys
    for key in passed:
        run = key.rsplit(".", 1)[0]
        assert f"{keys[key]} passed, {keys[run + '.skipped']} skipped in {keys[run + '.tests_seconds']}" in record
    newest = max(key.rsplit(".", 1)[0] for key in passed)  # run_YYYY_MM_DD: README states the newest run
    assert f"<!-- keys: {newest}.total {newest}.build {newest}.passed {newest}.skipped {newest}.tests_time -->" in \
        README.read_text()


# Each fault: (what, the text of README it replaces, its replacement, a part of the drift line expected).
# The replaced text must occur exactly once, so a fault always lands where it is meant to.
FAULTS = [
    ("two figures of a table swapped",
     "+0.64 ms, no module added <!-- keys: startup.clean.median_ms startup.clean.modules",
     "+0.68 ms, no module added <!-- keys: startup.clean.median_ms startup.clean.modules",
     "shows 0.68 where docs/overhead.md has startup.switch_unset.added_ms = 0.64"),
    ("one digit changed", "| 15.11 ms, 55 modules |", "| 15.12 ms, 55 modules |",
     "shows 15.12 where docs/overhead.md has startup.clean.median_ms = 15.11"),
    ("figures taken out of their row",
     "0.28, 0.46 ms / 0.32, 0.46 ms (later calls 0.20 / 0.21 ms) <!--",
     "0.28, 0.46 ms / 0.32, 0.46 ms <!--",
     "shows 6 figure(s) (0, 0, 0.28, 0.46, 0.32, 0.46) but its keys name 8"),
    ("the growth counts reversed", "| none | 2 growths |", "| none | 0 growths |",
     "shows 0 where docs/gpu-runs.md has warmup_h100.growths.none.max_8192 = 2 growths"),
    ("the test count changed", "then 1786 tests passed", "then 1787 tests passed",
     "shows 1787 where docs/ci-runs.md has run_2026_12_07d.passed = 1786"),
    ("a figure added without a key", "per call up to 32 MiB (host-side), 87-94 us",
     "per call up to 32 MiB (host-side, 9 us of it Python), 87-94 us",
     "shows 6 figure(s) (32, 9, 87, 94, 64, 72) but its keys name 5"),
]


def planted(tmp_path, old, new, also=()):
    text = README.read_text()
    for before, after in ((old, new),) + tuple(also):
        assert text.count(before) == 1, f"the fault's target is not in README.md once: {before[:60]}"
        text = text.replace(before, after)
    page = tmp_path / "README.md"
    page.write_text(text)
    return page


@pytest.mark.parametrize("what, old, new, expected", FAULTS, ids=[f[0] for f in FAULTS])
def test_a_planted_fault_in_readme_fails(tmp_path, what, old, new, expected):
    result = checker(planted(tmp_path, old, new), "--records")
    assert result.returncode == 1, result.stdout
    assert "[DRIFT]" in result.stdout and expected in result.stdout, result.stdout


def test_a_figure_moved_to_another_row_fails_in_both_rows(tmp_path):
    """The later-call medians taken out of the plan's row and put in the empty cell of the longest-prompt row:
    both rows drift (the numbers all still occur in the record, which is all the old check asked)."""
    page = planted(tmp_path, "0.28, 0.46 ms / 0.32, 0.46 ms (later calls 0.20 / 0.21 ms) <!--",
                   "0.28, 0.46 ms / 0.32, 0.46 ms <!--",
                   also=[("| 1 | <!-- keys: warmup_h100.growths.longest.max_8192",
                          "| 1 | later calls 0.20 / 0.21 ms <!-- keys: warmup_h100.growths.longest.max_8192")])
    result = checker(page, "--records")
    assert result.returncode == 1
    assert 'row "longest prompt only"): shows 5 figure(s)' in result.stdout, result.stdout
    assert 'row "the plugin\'s plan"): shows 6 figure(s)' in result.stdout, result.stdout


def test_zero_and_two_growths_reversed_fails_on_both_rows(tmp_path):
    page = planted(tmp_path, "| none | 2 growths |", "| none | 0 growths |",
                   also=[("| the plugin's plan | **0** |", "| the plugin's plan | **2** |")])
    result = checker(page, "--records")
    assert result.returncode == 1
    assert "shows 0 where docs/gpu-runs.md has warmup_h100.growths.none.max_8192 = 2 growths" in result.stdout
    assert "shows 2 where docs/gpu-runs.md has warmup_h100.growths.plan.max_8192 = 0" in result.stdout


def test_the_checker_on_scratch_records(tmp_path):
    record = tmp_path / "record.md"
    record.write_text(
        "# runs\n\nmachine: 2 cores\n\n## run one\n\n```\n12.5 us and 3-4 ms\n```\n\n"
        "```json\n{\"start up\": {\"median ms\": 7.25}}\n```\n\n"
        "```figures\none.cost = 12.5 us\none.range = 3-4 ms\none.cores = 2\n```\n\n"
        "## run two\n\n```\n99 us\n```\n\n```figures\ntwo.cost = 12.5 us\n```\n")
    listed = checker("--keys", record)
    assert "start_up.median_ms = 7.25" in listed.stdout and "one.range = 3-4 ms" in listed.stdout
    # run two did not print 12.5 us: its labelled value is refused
    assert listed.returncode == 1 and "two.cost = 12.5 us: the value is not in its section" in listed.stdout
    record.write_text(record.read_text().replace("two.cost = 12.5 us", "two.cost = 99 us"))
    assert checker("--keys", record).returncode == 0
    page = tmp_path / "page.md"
    page.write_text(
        "intro\n\n<!-- output: printf 'one\\ntwo\\n' -->\n```\none\nthree\n```\n\n"
        "```\nuntagged stays\n```\n\n"
        f"<!-- figures: {record} -->\n"
        "| what | figure |\n|---|---|\n"
        "| cost | 12.5 us, `--runs 41` is code <!-- keys: one.cost --> |\n"
        "| range | 3-4 ms on 2 cores <!-- keys: one.range one.cores --> |\n"
        "| start | 7.25 ms <!-- keys: start_up.median_ms --> |\n"
        "| later | 99 us <!-- keys: two.gone --> |\n"
        "| bare | 9 us |\n"
        "<!-- /figures -->\n")
    result = checker(page)
    assert result.returncode == 1
    assert "-three" in result.stdout and "+two" in result.stdout
    assert 'row "later"): no value named two.gone' in result.stdout
    assert 'row "bare"): shows 9 but names no key' in result.stdout
    for row in ("cost", "range", "start"):
        assert f'row "{row}")' not in result.stdout, result.stdout
    checker(page, "--update")
    text = page.read_text()
    assert "```\none\ntwo\n```" in text and "untagged stays" in text
    again = checker(page)
    assert again.returncode == 1 and "[ok]" in again.stdout and 'row "bare")' in again.stdout


def test_a_bad_record_name_is_one_line():
    result = checker("--keys", "docs/no-such-record.md")
    assert result.returncode == 1 and result.stdout.count("\n") == 1 and not result.stderr
