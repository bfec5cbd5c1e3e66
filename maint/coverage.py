"""The per-release coverage table: which CI release proves the shape of every release 0.5.6-0.5.23 (its digest).

    python -m maint.coverage      (from the checkout, with .venv/bin first on PATH; needs .cache/wheels,
                                   ci/fetch-wheels.sh)

Read from the wheels without importing sglang (``maint/release_shapes.py``), ci/releases.txt (sets and
pins) and sglang_cp_symm/pins.py. docs/coverage.md shows this output, checked by ci/readme.py.
"""

import sys
from pathlib import Path

from sglang_cp_symm.pins import pin_for
from sglang_cp_symm.releases import Release

from maint.release_shapes import coverage

ROOT = Path(__file__).resolve().parent.parent


def releases_txt():
    rows = {}
    for line in (ROOT / "ci" / "releases.txt").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and not line.startswith("#"):
            rows[fields[0]] = (fields[1], fields[2:])
    return rows


def main() -> int:
    sets = releases_txt()
    proved = [r for r, (s, _) in sets.items() if s == "ci"]
    rows = coverage(sorted((ROOT / ".cache" / "wheels").glob("sglang-*.whl")), proved)
    print("| sglang | set | what changed for the proof | proved on | torch / NCCL pin | light-environment pins |")
    print("|---|---|---|---|---|---|")
    missing = 0
    for row in rows:
        version = row["release"]
        if row["post_same"]:
            continue
        base = version.split(".post")[0]
        set_name, pins = sets.get(base, ("-", []))
        if version in proved:
            where = "itself"
        elif row["unproved"]:
            where = "**not proved: no release of set \"ci\" has this digest**"
            missing += 1
        else:
            where = ", ".join(row["proved_on"]) + " (same digest)"
        pin = pin_for(Release.parse(base))
        print(f"| {version} | {set_name if '.post' not in version else 'post'} | {row['change']} | "
              f"{where} | {pin.torch} / {pin.nccl} | {' '.join(pins) if '.post' not in version else ''} |")
    print(f"\nPost releases with their release's digest are left out. Releases whose digest no release of set \"ci\" "
          f"has: {missing}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
