"""Which releases share a target shape, read from the wheels without importing sglang.

A release's *target shape* is what the CPU proof has to call differently: the
register's entries present in it, and for each one the function's code (its AST,
docstring and line numbers aside, so a signature, a layout or a group lookup that
changed changes it), the fields of the CP metadata dataclass its module defines,
and how ``get_parallel()`` answers (read-through, or stamped values from 0.5.21:
``runtime_context.ParallelContext.override_permanently``). Two releases with the
same shape run the same proof; CI proves one release of each shape
(``ci/releases.txt`` set "ci", checked by ``tests/tools/test_release_shapes.py``; the table is
``python -m maint.coverage``). Maintainer-only: it reads wheels of every release, never the installed one.
"""

from __future__ import annotations

import ast
import hashlib
from typing import Callable, Dict, Optional

from sglang_cp_symm.releases import Release
from sglang_cp_symm.targets import is_supported, targets_for
from sglang_cp_symm.tools.source_survey import find_function, module_path

from maint.patches import wheel_reader

Reader = Callable[[str], Optional[str]]


def _code_digest(node: ast.AST) -> str:
    node = ast.parse(ast.unparse(node)).body[0]  # a copy
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(node, include_attributes=False).encode()).hexdigest()[:10]


def _metadata_fields(tree: ast.Module) -> tuple:
    fields = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("ContextParallelMetadata"):
            fields |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return tuple(sorted(fields))


def shape_of(read: Reader, release: Release) -> Dict[str, object]:
    """{target name: (code digest, metadata fields)} plus "get_parallel": "stamped"/"read-through"/"absent"."""
    shape: Dict[str, object] = {}
    trees: Dict[str, Optional[ast.Module]] = {}
    for target in targets_for(release):
        if target.module not in trees:
            text = read(module_path(target.module))
            trees[target.module] = None if text is None else ast.parse(text)
        tree = trees[target.module]
        node = None if tree is None else find_function(tree, target.function)
        shape[target.name] = "absent" if node is None else (_code_digest(node), _metadata_fields(tree))
    runtime = read(module_path("sglang.srt.runtime_context"))
    shape["get_parallel"] = ("absent" if runtime is None else
                             "stamped" if "def override_permanently" in runtime else "read-through")
    return shape


def describe_change(previous: Dict[str, object], current: Dict[str, object]) -> str:
    """What differs from the previous release's shape, in words."""
    if not previous:
        return "first supported release"
    changes = []
    for name in sorted(set(previous) | set(current)):
        before, after = previous.get(name), current.get(name)
        if before == after:
            continue
        if name == "get_parallel":
            changes.append(f"get_parallel() {after}")
        elif before is None:
            changes.append(f"+{name}")
        elif after is None:
            changes.append(f"-{name}")
        elif before[1] != after[1] and before[0] == after[0]:
            changes.append(f"{name} metadata fields")
        else:
            changes.append(f"{name} code")
    return ", ".join(changes) or "same as the previous release"


def wheel_release(name: str) -> Optional[str]:
    """``0.5.10.post1`` from ``sglang-0.5.10.post1-py3-none-any.whl``."""
    parts = name.split("-")
    return parts[1] if len(parts) > 2 and parts[0] == "sglang" else None


def _order(version: str):
    base, _, post = version.partition(".post")
    return (Release.parse(base), int(post or 0) if post.isdigit() else 0)


def coverage(wheels, proved) -> list:
    """One row per supported release (post releases folded into theirs when their shape is the same):
    {release, shape_change, targets, covered_by: {target: [proved releases with that target shape]}, uncovered}.

    ``wheels``: paths of sglang wheels; ``proved``: the releases CI proves.
    """
    shapes = {}
    for wheel in wheels:
        version = wheel_release(wheel.name)
        if version is None or not is_supported_version(version):
            continue
        shapes[version] = shape_of(wheel_reader(wheel), Release.parse(version))
    proved_shapes: Dict[tuple, list] = {}
    for version in proved:
        for name, value in shapes.get(version, {}).items():
            proved_shapes.setdefault((name, repr(value)), []).append(version)
    rows, previous = [], {}
    for version in sorted(shapes, key=_order):
        shape = shapes[version]
        covered = {name: proved_shapes.get((name, repr(value)), []) for name, value in shape.items()}
        post = ".post" in version
        same = post and shape == shapes.get(version.split(".post")[0])
        rows.append({"release": version, "post_same": same, "change": describe_change(previous, shape),
                     "targets": [n for n in shape if n != "get_parallel"], "covered_by": covered,
                     "uncovered": sorted(n for n, by in covered.items() if not by)})
        if not post:
            previous = shape
    return rows


def is_supported_version(version: str) -> bool:
    return is_supported(Release.parse(version.split(".post")[0]))
