"""Find each register target in a release's source text, without importing sglang.

Used by the release sweep (every published wheel, unpacked or not), by the
patch generator and by the doctor (the installed sglang's files, located through
its distribution metadata, so that no engine module is imported).
"""

from __future__ import annotations

import ast
from typing import Callable, Dict, Optional

import builtins

from ..engine.rewrite import (
    INJECTABLE,
    NoGatherCall,
    ShapeMismatch,
    already_in_context,
    find_gather_call,
    find_output_edit,
    find_send_edit,
    injected_names,
)
from ..targets import TARGETS, Target
from ..releases import Release

NEEDS_PATCH, UPSTREAM, ABSENT, CHANGED = "needs patch", "upstream", "absent", "changed shape"


def module_path(module: str) -> str:
    return module.replace(".", "/") + ".py"


def find_function(tree: ast.Module, dotted: str) -> Optional[ast.AST]:
    node: ast.AST = tree
    for part in dotted.split("."):
        body = getattr(node, "body", [])
        matches = [n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part]
        if not matches:
            return None
        node = matches[-1]
    return node if isinstance(node, ast.FunctionDef) else None


def function_source(text: str, node: ast.AST) -> str:
    lines = text.splitlines()
    return "\n".join(lines[node.lineno - 1 : node.end_lineno]) + "\n"


def target_state(text: Optional[str], target: Target) -> tuple[str, str]:
    """(state, detail) of one target in one module's source text."""
    if text is None:
        return ABSENT, "module not in this release"
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        return CHANGED, f"module does not parse: {exc}"
    node = find_function(tree, target.function)
    if node is None:
        return ABSENT, "function not in this release"
    source = function_source(text, node)
    try:
        find_gather_call(node, target)
    except NoGatherCall:  # a helper of that name that gathers nothing itself, or a stub
        return ABSENT, f"function has no all-gather taking ({target.output}, {target.input})"
    except ShapeMismatch as exc:
        return CHANGED, str(exc)
    try:
        find_send_edit(source, target)
    except ShapeMismatch as exc:
        return CHANGED, str(exc)
    if already_in_context(node, target):
        return UPSTREAM, target.fixed_by
    try:
        find_output_edit(source, target)
    except ShapeMismatch as exc:
        return CHANGED, str(exc)
    return NEEDS_PATCH, "output allocated outside the symmetric context"


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
        state, detail = target_state(cache[path], target)
        report[target.name] = {"file": path, "state": state, "detail": detail,
                               "expected": expected_state(target, release)}
    return report


def installed_reader() -> Optional[Callable[[str], Optional[str]]]:
    """A reader over the installed sglang's files (through its metadata), or None without sglang."""
    from importlib import metadata

    try:
        dist = metadata.distribution("sglang")
    except metadata.PackageNotFoundError:
        return None

    def read(path: str) -> Optional[str]:
        located = dist.locate_file(path)
        try:
            return located.read_text(encoding="utf-8")
        except (OSError, AttributeError):
            return None

    return read
