"""Warn about sglang, torch and NCCL releases on the package index that this checkout does not know yet.

Why: the register (``targets.LAST_SUPPORTED``), the pins (``pins.PINS``, ``maint/pins_table.NEWER_TORCH``) and the NCCL
policy (``nccl_policy.NEWEST_VERIFIED``, raised only by ``maint/nccl_audit.py``) describe the
releases that existed when they were written; a new release changes what users run while every
test stays green. ``ci/test.sh`` runs this before pytest:

    python -m maint.index_check

It asks pip's configured index (``pip index versions``) and prints one ``index-check: warning``
line per release newer than what the checkout knows. It never fails: the index can change under
a green commit, and a machine without network gets one line saying so. Exit status is always 0;
the whole check is bounded (``--timeout``, 30 s by default).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: the package's source, not whatever is installed
    sys.path.insert(0, str(ROOT))

_KEY = re.compile(r"^\s*v?(\d+(?:\.\d+)*)(?:\.?post(\d+))?")


def version_key(version: str) -> Optional[Tuple[Tuple[int, ...], int]]:
    """(release numbers, post number) of ``version``; local labels (``+cpu``) ignored; None when unreadable
    or a pre-/dev release (never a release users get by default)."""
    text = version.strip().split("+", 1)[0]
    if re.search(r"(a|b|rc|dev)\d*$", text.split(".")[-1]) and not text.split(".")[-1].isdigit():
        return None
    m = _KEY.match(text)
    if not m or m.end() != len(text):
        return None
    numbers = tuple(int(p) for p in m.group(1).split("."))
    numbers = numbers + (0,) * (3 - len(numbers))
    return numbers, int(m.group(2) or 0)


def newer(available: Iterable[str], known: str) -> List[str]:
    """The versions of ``available`` newer than ``known``, oldest first, each once."""
    bound = version_key(known)
    found = {}
    for version in available:
        key = version_key(version)
        if key is not None and bound is not None and key > bound:
            found.setdefault(key, version.strip().split("+", 1)[0])
    return [found[k] for k in sorted(found)]


def parse_pip_index(output: str) -> List[str]:
    """The versions of ``pip index versions`` output (its ``Available versions:`` line)."""
    for line in output.splitlines():
        if line.startswith("Available versions:"):
            return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
    return []


def known() -> List[Tuple[str, str, str]]:
    """(distribution, newest version this checkout knows, what knows it)."""
    from sglang_cp_symm.engine.nccl_policy import NEWEST_VERIFIED
    from sglang_cp_symm.pins import PINS
    from sglang_cp_symm.targets import LAST_SUPPORTED

    from maint.pins_table import NEWER_TORCH

    torch_pins = [(p.torch, p.nccl, p.nccl_wheel) for p in PINS] + list(NEWER_TORCH)
    torch = max((t for t, _, _ in torch_pins), key=version_key)
    nccl = max([str(NEWEST_VERIFIED)] + [n for _, n, wheel in torch_pins if wheel == "nvidia-nccl-cu13"],
               key=version_key)
    return [("sglang", str(LAST_SUPPORTED), "targets.LAST_SUPPORTED"),
            ("torch", torch, "pins.PINS and maint/pins_table.NEWER_TORCH"),
            ("nvidia-nccl-cu13", nccl, "nccl_policy.NEWEST_VERIFIED and the torch pins")]


def advice(dist: str) -> str:
    return {"sglang": "check the release and extend the register (sglang_cp_symm/targets.py)",
            "torch": "read its NCCL pin from the wheel's metadata into sglang_cp_symm/pins.py",
            "nvidia-nccl-cu13": "run 'python -m maint.nccl_audit VERSION' and add its policy row"}[dist]


def warnings(dist: str, available: Sequence[str], newest_known: str, source: str) -> List[str]:
    return [f"index-check: warning: {dist} {v} is on the index, newer than {newest_known} ({source}): {advice(dist)}"
            for v in newer(available, newest_known)]


def index_versions(dist: str, timeout: float) -> List[str]:
    try:
        result = subprocess.run([sys.executable, "-m", "pip", "index", "versions", dist], capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pip index versions gave no answer within {timeout:g} s") from None
    versions = parse_pip_index(result.stdout)
    if result.returncode != 0 or not versions:
        last = (result.stderr.strip().splitlines() or ["no versions listed"])[-1]
        raise RuntimeError(last[:160])
    return versions


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maint.index_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole check (default 30)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument (argparse said which): never a failure
        return 0 if not e.code else (print("index-check: skipped: bad arguments (see above)") or 0)
    try:
        targets = known()
    except Exception as e:  # a checkout that cannot even say what it knows: one line, never a failure
        print(f"index-check: skipped: cannot read what this checkout knows ({type(e).__name__}: {str(e)[:120]})")
        return 0
    pool = ThreadPoolExecutor(max_workers=len(targets))
    futures = {dist: pool.submit(index_versions, dist, args.timeout) for dist, _, _ in targets}
    wait(futures.values(), timeout=args.timeout)
    count, checked = 0, 0
    for dist, newest_known, source in targets:
        future = futures[dist]
        if not future.done():
            print(f"index-check: skipped {dist}: the index did not answer within {args.timeout:g} s")
            continue
        error = future.exception()
        if error is not None:
            print(f"index-check: skipped {dist}: {str(error)[:160] or type(error).__name__}")
            continue
        checked += 1
        for line in warnings(dist, future.result(), newest_known, source):
            print(line)
            count += 1
    pool.shutdown(wait=False)
    print(f"index-check: {checked} of {len(targets)} distributions checked; {count} release(s) newer than this "
          "checkout knows (warnings only: this check never fails)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
