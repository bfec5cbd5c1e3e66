"""The tree tells the architecture: what runs inside the engine never reaches the offline tools.

Stage A. The package's own import statements are read with ``ast`` (module level
and inside functions alike: a lazy import is an edge all the same) and resolved
to the package's modules. The checks:

- nothing in ``sglang_cp_symm.engine`` (what runs inside sglang's processes), nor the
  register or the bootstrap, imports anything from ``sglang_cp_symm.tools``;
- the import graph has no circle;
- no module takes a private name (``_x``) from another module of the package;
- the bootstrap (run from the ``.pth`` file in every interpreter) imports only
  ``sys`` at module level, and the package ``__init__`` nothing at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "sglang_cp_symm"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve_from(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str):
    """(imported module of the package, names taken from it, line) for every import statement in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE):
                    yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = resolve_from(module, node, path.name == "__init__.py")
            if not source.startswith(PACKAGE):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:  # `from . import x` imports the submodule x
                    yield sub, (), node.lineno
                else:
                    yield source, (alias.name,), node.lineno


GRAPH = {m: sorted({target for target, _, _ in imports_of(m) if target in MODULES and target != m}) for m in MODULES}


def is_engine_side(module: str) -> bool:
    return not module.startswith(f"{PACKAGE}.tools") and module != f"{PACKAGE}.__main__"


def test_the_engine_side_never_imports_the_tools():
    edges = [f"{m} -> {t} (line {line})" for m in MODULES if is_engine_side(m)
             for t, _, line in imports_of(m) if t.startswith(f"{PACKAGE}.tools")]
    assert not edges, "\n".join(edges)


def test_there_is_no_import_circle():
    circles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in GRAPH[node]:
            if state.get(nxt) == "open":
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def module_aliases(module: str) -> dict:
    """Names under which ``module`` binds other modules of the package (``from . import pool as p``: p)."""
    aliases = {}
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = resolve_from(module, node, MODULES[module].name == "__init__.py")
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
    return aliases


def test_no_private_name_crosses_a_module():
    taken = [f"{m}:{line} takes {name} from {source}" for m in MODULES for source, names, line in imports_of(m)
             for name in names if private(name)]
    for m in MODULES:
        aliases = module_aliases(m)
        for node in ast.walk(ast.parse(MODULES[m].read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and private(node.attr)):
                taken.append(f"{m}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    assert not taken, "\n".join(taken)


@pytest.mark.parametrize("module", [f"{PACKAGE}.bootstrap", PACKAGE])
def test_what_every_interpreter_runs_imports_next_to_nothing(module):
    tree = ast.parse(MODULES[module].read_text())
    top_level = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    top_level += [node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module != "__future__"]
    assert top_level == (["sys"] if module.endswith("bootstrap") else [])


def test_the_graph_was_read():
    """Guards the checks above against passing on an empty graph."""
    assert f"{PACKAGE}.engine.patching" in GRAPH[f"{PACKAGE}.engine.activation"]
    assert f"{PACKAGE}.engine.rewrite" in GRAPH[f"{PACKAGE}.tools.source_survey"]
    assert len(MODULES) > 25
