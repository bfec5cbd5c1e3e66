"""README's pins table, made from the pins and the plan: ``python -m maint.pins_table`` (needs .cache/wheels).

For each line of ``pins.PINS`` (the torch and NCCL each sglang release pins, read from the wheels' metadata) and
for torch releases no sglang pins yet (``NEWER_TORCH``), it says what sglang's own registration gives on that
NCCL and what the plugin does there. Both columns come from ``engine.plan.make_plan`` over the newest release of
the line (its targets read from its published wheel, as the doctor reads an installed one), with the NCCL the
line pins, the plugin off and on: the table cannot say other than the engine does. README shows this output,
checked by ``ci/readme.py``.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Optional

from sglang_cp_symm.engine.nccl_policy import NcclVersion, line_for
from sglang_cp_symm.engine.plan import Facts, State, make_plan, read_sources
from sglang_cp_symm.engine.settings import Settings
from sglang_cp_symm.engine.source_facts import module_path
from sglang_cp_symm.pins import PINS
from sglang_cp_symm.releases import Release

#: Torch releases no sglang release pins yet, and the NCCL each pins: (torch, NCCL, the wheel that carries it).
#: torch 2.15.0: ``torch-2.15.0-cp311-cp311-manylinux_2_28_x86_64.whl``'s metadata, read through
#: ``pip install --dry-run --no-deps --report``: ``nvidia-nccl-cu13==2.30.7; platform_system == "Linux"``.
NEWER_TORCH = (("2.15.0", "2.30.7", "nvidia-nccl-cu13"),)
WHEELS = Path(__file__).resolve().parent.parent / ".cache" / "wheels"


def wheel_of(release: Release) -> Optional[Path]:
    return next(WHEELS.glob(f"sglang-{release}-*.whl"), None)


def plan_for(release: Release, nccl: str, enabled: bool):
    archive = zipfile.ZipFile(wheel_of(release))
    names = set(archive.namelist())

    def read(module: str):
        path = module_path(module)
        return archive.read(path).decode("utf-8") if path in names else None

    sources, pool = read_sources(release, read)
    return make_plan(Facts(release, Settings(enabled=enabled), sources, pool,
                           NcclVersion.parse(nccl), "the release's pin"))


def upstream_words(plan) -> str:
    engaged = [t for t in plan.targets if t.kernel]
    in_window = [t for t in plan.targets if t.output_in_window]
    if engaged:
        return "**engages the racy kernel**" if any(t.hazard for t in engaged) else "engages, fixed"
    if in_window:
        return "no symmetric kernel (this NCCL needs the send buffer registered too)"
    return "no symmetric kernel (no CP output in a window of the CP communicator)"


def plugin_words(plan) -> str:
    states = {t.state for t in plan.targets if t.state != State.ABSENT}
    if State.GUARDED in states:
        return "guarded"
    patched = [t for t in plan.targets if t.state == State.PATCHED]
    kernel = any(t.kernel for t in plan.targets)
    if patched:
        return "outputs patched" + ("; the symmetric kernel engages" if kernel else "; `SEND=1` engages the kernel")
    return "upstream's, as written" if kernel else "nothing to change"


def main() -> int:
    if not WHEELS.is_dir():
        print(f"no wheels in {WHEELS}: run ci/fetch-wheels.sh first", file=sys.stderr)
        return 2
    print("| sglang | torch | NCCL | race (2.28.0-2.30.6) | upstream's own CP registration on that NCCL | with the plugin on |")
    print("|---|---|---|---|---|---|")
    for pin in PINS:
        newest = max((Release.parse(w.name.split("-")[1]) for w in WHEELS.glob("sglang-*.whl")
                      if "post" not in w.name.split("-")[1] and pin.covers(Release.parse(w.name.split("-")[1]))))
        racy = "yes" if line_for(NcclVersion.parse(pin.nccl)).race else "no"
        print(f"| {pin.first}–{pin.last} | {pin.torch} | {pin.nccl} | {racy} | "
              f"{upstream_words(plan_for(newest, pin.nccl, False))} | {plugin_words(plan_for(newest, pin.nccl, True))} |")
    for torch, nccl, _ in NEWER_TORCH:
        racy = "yes" if line_for(NcclVersion.parse(nccl)).race else "no"
        print(f"| (none yet) | {torch} | {nccl} | {racy} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
