"""Survey every register target in a release's files (a wheel, unpacked or not), without importing sglang.

Used by the release sweep over every published wheel and by the patch generator (maintainers' code: not in the
wheel).
Each target is read with the engine's own ``source_facts.target_state``, the same
reading the plan makes of the installed source.
"""

from __future__ import annotations

import ast
from typing import Callable, Dict, Optional

import builtins

from sglang_cp_symm.engine.rewrite import INJECTABLE, ShapeMismatch, already_in_context, find_send_edit, injected_names
from sglang_cp_symm.engine.source_facts import (  # noqa: F401  (the sweep and the patch generator read targets with these)
    ABSENT,
    NEEDS_PATCH,
    UPSTREAM,
    find_function,
    function_source,
    module_path,
    target_state,
)
from sglang_cp_symm.targets import TARGETS, Target
from sglang_cp_symm.releases import Release


def module_bindings(tree: ast.Module) -> set:
    """Names a module binds whenever it is imported: top-level imports, definitions and assignments, and those
    of top-level ``try`` blocks (``if`` blocks, such as ``if TYPE_CHECKING:``, are not counted)."""
    names: set = set()

    def visit(body) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name != "*":
                        names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return names


def injected_name_report(text: Optional[str], target: Target, release: Release, send: bool = False) -> Dict[str, str]:
    """Each name the code the plugin inserts into ``target`` (in one release's module source) reads, and where it
    resolves: "local", "module", "builtin", "injected from M" or "missing"; {} when nothing would be inserted,
    {"refused": reason} where the rewrite refuses the function. The same decisions as ``patching`` makes on
    the imported module, read from the text alone."""
    if text is None:
        return {}
    tree = ast.parse(text)
    node = find_function(tree, target.function)
    if node is None:
        return {}
    source = function_source(text, node)
    output = not target.fixed_upstream_in(release) and not already_in_context(node, target)
    try:
        if send:
            find_send_edit(source, target)
        needed = injected_names(source, target, output, send) if (output or send) else {}
    except ShapeMismatch as exc:
        return {"refused": str(exc)}
    bound = module_bindings(tree)
    report = {}
    for name, kind in sorted(needed.items()):
        if kind == "local":
            report[name] = "local"
        elif name in bound:
            report[name] = "module"
        elif name in INJECTABLE:
            report[name] = f"injected from {INJECTABLE[name]}"
        elif hasattr(builtins, name):
            report[name] = "builtin"
        else:
            report[name] = "missing"
    return report


def expected_state(target: Target, release: Release) -> str:
    if not target.exists_in(release):
        return ABSENT
    return UPSTREAM if target.fixed_upstream_in(release) else NEEDS_PATCH


def survey(read: Callable[[str], Optional[str]], release: Release) -> Dict[str, dict]:
    """State of every register target in one release; ``read(path)`` returns a file's text or None."""
    cache: Dict[str, Optional[str]] = {}
    report = {}
    for target in TARGETS:
        path = module_path(target.module)
        if path not in cache:
            cache[path] = read(path)
        fact = target_state(cache[path], target)
        state, detail = fact.state, fact.detail
        report[target.name] = {"file": path, "state": state, "detail": detail,
                               "expected": expected_state(target, release)}
    return report
