"""How large the shipped package is: modules, lines by kind, and the largest functions.

    python -m maint.size_report [REVISION]      (from the checkout; REVISION: a git revision, read with git archive)

Issue 20 set a size target (about 25 shipped modules, about 6,500 lines) and asks each closing note for these
counts before and after; this is the one way they are counted. Each ``.py`` of ``sglang_cp_symm/`` (what the wheel
ships) is read with ``ast``: a line is a docstring's (module, class, function), a comment, blank, or code.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "sglang_cp_symm"
KINDS = ("code", "doc", "comment", "blank")


def line_kinds(source: str) -> Dict[str, int]:
    """Lines of one module by kind."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    counts = dict.fromkeys(KINDS, 0)
    for number, line in enumerate(source.splitlines(), 1):
        text = line.strip()
        kind = "doc" if number in docstrings else "blank" if not text else "comment" if text.startswith("#") else "code"
        counts[kind] += 1
    return counts


def largest_functions(sources: Dict[str, str], most: int = 5) -> List[Tuple[int, str]]:
    """(lines, "module:function") of the longest functions and methods, longest first."""
    found = [(node.end_lineno - node.lineno + 1, f"{name}:{node.name}")
             for name, source in sources.items() for node in ast.walk(ast.parse(source))
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return sorted(found, key=lambda item: (-item[0], item[1]))[:most]


def package_sources(root: Path) -> Dict[str, str]:
    package = root / PACKAGE
    return {str(path.relative_to(package)): path.read_text() for path in sorted(package.rglob("*.py"))}


def report(sources: Dict[str, str]) -> str:
    totals = dict.fromkeys(KINDS, 0)
    for source in sources.values():
        for kind, count in line_kinds(source).items():
            totals[kind] += count
    lines = sum(totals.values())
    kinds = ", ".join(f"{totals[kind]:,} {kind}" for kind in KINDS)
    largest = ", ".join(f"{name} {count}" for count, name in largest_functions(sources))
    return f"{len(sources)} modules, {lines:,} lines ({kinds})\nlargest functions: {largest}"


def main(argv: List[str]) -> int:
    if not argv:
        print(report(package_sources(ROOT)))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", argv[0], PACKAGE], capture_output=True)
        if archive.returncode != 0:
            why = archive.stderr.decode(errors="replace")[:200].strip()
            print(f"size_report: git cannot read {argv[0][:40]!r} ({why}); give a commit, branch or tag")
            return 2
        tar_path = Path(folder) / "package.tar"
        tar_path.write_bytes(archive.stdout)
        with tarfile.open(tar_path) as tar:
            tar.extractall(folder, filter="data")
        print(report(package_sources(Path(folder))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
