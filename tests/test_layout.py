"""The tree tells the architecture: what runs inside the engine never reaches the offline tools.

Stage A. The package's own import statements are read with ``ast`` (module level
and inside functions alike: a lazy import is an edge all the same) and resolved
to the package's modules. The checks:

- nothing in ``sglang_cp_symm.engine`` (what runs inside sglang's processes), nor the
  register or the bootstrap, imports anything from ``sglang_cp_symm.tools``;
- the import graph has no circle;
- no module takes a private name (``_x``) from another module of the package;
- the bootstrap (run from the ``.pth`` file in every interpreter) imports only
  ``sys`` at module level, and the package ``__init__`` nothing at all;
- nothing in the package imports ``maint`` (maintainer-only, not in the wheel);
- no module holds mutable state at module level (``mutable_state`` says what counts), beyond
  ``ALLOWED_STATE``: the plugin object's holder alone;
- README's Architecture tree names every module of the package and of ``maint/``, and no other.
"""

from __future__ import annotations

import ast
import functools
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
    assert f"{PACKAGE}.engine.plan" in GRAPH[f"{PACKAGE}.tools.doctor"]
    assert len(MODULES) > 15


# -- maint/ stays out of the wheel's code ------------------------------------------------------------------------


def maint_imports(module: str) -> list:
    """Where ``module`` imports ``maint`` (a statement, or ``import_module``/``__import__`` of a literal name)."""
    found = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            names = [str(node.args[0].value)]
        found += [f"{module}:{node.lineno} imports {n}" for n in names if n == "maint" or n.startswith("maint.")]
    return found


def test_the_package_never_imports_maint():
    """maint/ is not in the wheel: an import of it from the package would fail on every user's machine."""
    found = [line for m in MODULES for line in maint_imports(m)]
    assert not found, "\n".join(found)


def test_the_maint_check_sees_an_import(tmp_path, monkeypatch):
    planted = tmp_path / "planted.py"
    planted.write_text("import importlib\n\ndef f():\n    from maint.patches import write_patches\n"
                       "    return importlib.import_module('maint.coverage')\n")
    monkeypatch.setitem(MODULES, f"{PACKAGE}.planted", planted)
    assert len(maint_imports(f"{PACKAGE}.planted")) == 2


# -- no module-level mutable state -------------------------------------------------------------------------------

#: The one module-level name that may hold mutable state (issue 20, item 3: one plugin object, created at
#: activation, owns the plan, the patch records, the guard, the warm-up, the watchdog and the log records; hooks
#: get it or a narrow handle; the offline tools' recorders are objects too). Constant tables are read-only (a
#: tuple, a frozenset or ``types.MappingProxyType``). The test fails on any new name, and on this one if it stops
#: being module-level state.
ALLOWED_STATE = {
    # THE holder of the process's plugin object (``activation.current()``), which owns every other piece of the
    # plugin's state: the entry point, ``status()`` and the command line must find the object of this process.
    # It stays.
    f"{PACKAGE}.engine.activation": {"_current"},
}

#: Calls whose result is immutable, or state that is not the package's (a logger belongs to ``logging``).
IMMUTABLE_CALLS = {"frozenset", "tuple", "str", "bytes", "int", "float", "bool", "object", "re.compile",
                   "logging.getLogger", "MappingProxyType", "types.MappingProxyType", "TypeVar", "typing.TypeVar",
                   "NewType", "typing.NewType", "namedtuple", "collections.namedtuple"}


#: Decorators that keep what a module-level function returned: state, though no name holds it.
CACHE_DECORATORS = frozenset({"lru_cache", "cache"})


def module_level_statements(body):
    """The statements a module runs when imported, into its top-level ``if``/``try``/``with`` blocks."""
    for node in body:
        yield node
        for block in ("body", "orelse", "finalbody"):
            if isinstance(node, (ast.If, ast.Try, ast.With)):
                yield from module_level_statements(getattr(node, block, []))
        for handler in getattr(node, "handlers", []):
            yield from module_level_statements(handler.body)


@functools.lru_cache(maxsize=None)
def frozen_classes_of(path: Path) -> tuple:
    """The immutable classes ``path`` defines: frozen dataclasses, ``NamedTuple``s, ``Enum``s."""
    frozen = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            decorators = [ast.unparse(d) for d in node.decorator_list]
            bases = [ast.unparse(b) for b in node.bases]
            if (any(d.startswith("dataclass") and "frozen=True" in d for d in decorators)
                    or any(b.split(".")[-1] in ("NamedTuple", "Enum", "IntEnum") for b in bases)):
                frozen.append(node.name)
    return tuple(frozen)


def frozen_classes() -> set:
    """``module.Class`` of the package's immutable classes."""
    return {f"{module}.{name}" for module, path in MODULES.items() for name in frozen_classes_of(path)}


def immutable_call(module: str, tree: ast.Module, call: ast.Call) -> bool:
    """``call`` builds an immutable value: a known call, a frozen class of the package, or a classmethod of one
    (``Release.parse``), called directly or through a module-level alias (``R = Release.parse``)."""
    name = ast.unparse(call.func)
    if name in IMMUTABLE_CALLS:
        return True
    bound = {}  # names this module binds to a package class, or to an attribute of one
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bound[node.name] = f"{module}.{node.name}"
        elif isinstance(node, ast.ImportFrom):
            source = resolve_from(module, node, MODULES[module].name == "__init__.py")
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
              and isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name)):
            bound[node.targets[0].id] = f"{node.value.value.id}.{node.value.attr}"
    head, _, attr = name.partition(".")
    target = bound.get(head, head)
    frozen = frozen_classes()
    if target in frozen:
        return True
    owner, _, method = (f"{target}.{attr}" if attr else target).rpartition(".")
    owner = bound.get(owner, owner)
    return owner in frozen and bool(method)


def mutable_state(module: str) -> dict:
    """{name: why} for each module-level name of ``module`` bound to mutable state: a list, dict or set (literal,
    comprehension or ``set()``-like call), any call not known to build an immutable value (an instance of a
    package class, a lock, a namespace), or a name a function rebinds through ``global``. ``__all__`` aside."""
    tree = ast.parse(MODULES[module].read_text())
    found = {}
    for node in module_level_statements(tree.body):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        if isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)):
            why = f"line {node.lineno}: a {type(value).__name__.replace('Comp', ' comprehension').lower()}"
        elif isinstance(value, ast.Call) and not immutable_call(module, tree, value):
            why = f"line {node.lineno}: the result of {ast.unparse(value.func)}()"
        else:
            continue
        found.update({n: why for n in names if n != "__all__"})
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.update({n: f"line {node.lineno}: rebound through `global`" for n in node.names})
    for node in tree.body:  # a cache is state a module keeps across calls, whatever it caches
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                name = ast.unparse(decorator.func if isinstance(decorator, ast.Call) else decorator)
                if name.split(".")[-1] in CACHE_DECORATORS:
                    found[node.name] = f"line {node.lineno}: cached by @{name}"
    return found


def test_no_new_module_level_state():
    """Module-level mutable state is shared by every caller in the process and outlives ``unpatch()``; the
    state belongs to the plugin object. Only the names of ``ALLOWED_STATE`` may hold some, until they go."""
    new = [f"{m}.{name} ({why})" for m in MODULES for name, why in sorted(mutable_state(m).items())
           if name not in ALLOWED_STATE.get(m, ())]
    assert not new, ("module-level mutable state (give it to the plugin object, or make it immutable):\n"
                     + "\n".join(new))


def test_the_allow_list_only_shrinks():
    """A listed name that is no longer module-level state (moved, renamed, made immutable) leaves the list."""
    stale = [f"{m}.{name}" for m, names in ALLOWED_STATE.items() for name in sorted(names)
             if m not in MODULES or name not in mutable_state(m)]
    assert not stale, "no longer module-level state, remove from ALLOWED_STATE:\n" + "\n".join(stale)


@pytest.mark.parametrize("code,caught", [
    ("CACHE = {}\n", {"CACHE"}),
    ("CELL: list = [None]\n", {"CELL"}),
    ("import threading\nLOCK = threading.Lock()\n", {"LOCK"}),
    ("class Thing:\n    pass\n\n\nTHING = Thing()\n", {"THING"}),
    ("SEEN = set()\nif True:\n    LATE = [x for x in (1, 2)]\n", {"SEEN", "LATE"}),
    ("_x = None\n\n\ndef f():\n    global _x\n    _x = 1\n", {"_x"}),
    ("import functools\n\n\n@functools.lru_cache(maxsize=1)\ndef made():\n    return object()\n", {"made"}),
    ("from dataclasses import dataclass\n\n\n@dataclass(frozen=True)\nclass P:\n    a: int\n\n\n"
     "ONE = P(1)\nNAMES = frozenset({'a'})\nPAIR = (1, 2)\n__all__ = ['ONE']\n", set()),
    ("from sglang_cp_symm.releases import Release\nR = Release.parse\nFIRST = R('0.5.6')\n"
     "LAST = Release.parse('0.5.23')\n", set()),
])
def test_the_state_check_tells_state_from_constants(tmp_path, monkeypatch, code, caught):
    """The rule itself, on planted modules: what it must catch, and the immutable values it must let be."""
    planted = tmp_path / "planted.py"
    planted.write_text(code)
    monkeypatch.setitem(MODULES, f"{PACKAGE}.planted", planted)
    assert set(mutable_state(f"{PACKAGE}.planted")) == caught


def tree_block(readme: str) -> str:
    """The code block of README's Architecture section that draws the tree (it begins with the package)."""
    section = readme.split("## Architecture", 1)[1]
    return next(block for block in section.split("```")[1::2] if block.lstrip("\n").startswith(f"{PACKAGE}/"))


def test_the_readme_tree_names_every_module_and_no_other():
    import re

    readme = (ROOT.parent / "README.md").read_text()
    named = set(re.findall(r"[A-Za-z_]\w*\.py\b", tree_block(readme))) - {"__init__.py"}
    files = [*ROOT.rglob("*.py"), *(ROOT.parent / "maint").glob("*.py")]
    modules = {p.name for p in files} - {"__init__.py", "__main__.py"}
    assert named == modules, (f"README's tree lacks {sorted(modules - named)}; "
                              f"names what is not there: {sorted(named - modules)}")
