"""The per-release coverage table: which CI release proves each target shape of every release 0.5.6-0.5.23.

    python -m maint.coverage      (from the checkout, with .venv/bin first on PATH; needs .cache/wheels,
                                   ci/fetch-wheels.sh)

Read from the wheels without importing sglang (``maint/release_shapes.py``), ci/releases.txt (sets and pins) and
sglang_cp_symm/pins.py. docs/coverage.md shows this output, checked by ci/readme.py.
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
    print("| sglang | set | what changed for the proof | its target shapes are proved on | torch / NCCL pin | light-environment pins |")
    print("|---|---|---|---|---|---|")
    missing = 0
    for row in rows:
        version = row["release"]
        if row["post_same"]:
            continue
        base = version.split(".post")[0]
        set_name, pins = sets.get(base, ("-", []))
        first = {name: min(vs, key=Release.parse) for name, vs in row["covered_by"].items() if vs}
        if version in proved:
            where = "itself"
        elif row["uncovered"]:
            where = "**not proved: " + ", ".join(row["uncovered"]) + "**"
            missing += 1
        else:
            where = "; ".join(f"{'get_parallel()' if n == 'get_parallel' else n} {v}" for n, v in sorted(first.items()))
        pin = pin_for(Release.parse(base))
        print(f"| {version} | {set_name if '.post' not in version else 'post'} | {row['change']} | {where} | "
              f"{pin.torch} / {pin.nccl} | {' '.join(pins) if '.post' not in version else ''} |")
    print(f"\nPost releases whose targets are the same as their release's are left out. Target shapes not proved "
          f"in set \"ci\": {missing}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
