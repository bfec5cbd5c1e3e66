"""Which releases share a shape, read from the wheels without importing sglang.

A release's *shape* is every piece of sglang that the CPU proof (``rehearsal``,
``gather_calls``) runs or reads and that the race guard (``engine/race_guard.py``)
relies on; its *digest* is one hash over all of it. Two releases with the same
digest run the same proof, so CI proves one release of each digest: a release whose
digest no release of set "ci" (``ci/releases.txt``) has must join the set
(``tests/tools/test_release_shapes.py`` fails until it does). A digest is compared
whole, not piece by piece: every target's calls run on the release's own groups,
coordinator, allocator and ``get_parallel()``, so a piece proved on one release and
another piece proved on a second do not prove the release that combines them.
Digests are compared within one run and never stored: ``ast.dump`` differs between
Python versions.

Each piece is the normalised AST of exactly the code named here (docstrings,
comments, line numbers and layout aside), so an unrelated edit of the same file
changes nothing. The pieces, and why each is in:

- each register target (``targets.py``): the function; for a method, its class's
  ``__init__`` too (``gather_calls`` builds ``ZigzagCPStrategy(cp)`` and
  ``InterleaveCPStrategy(cp)`` and calls the method on it); and the fields of the
  CP metadata dataclass its module defines (``gather_calls.build_metadata`` fills
  them). A signature, a layout or a group lookup that changed changes it.
- ``groups``: how the groups the guard names are built. In the functions that build
  groups (``parallel_state.initialize_model_parallel``, ``dp_attention.initialize_dp_attention``),
  the statements that build a group named in ``race_guard.GUARDED_GROUPS`` (``attn_cp``,
  ``attn_cp_overlap``, ``dcp``; and ``attention_tp`` where a target gathers on the
  attention-TP group, 0.5.6-0.5.8), the earlier statements whose values they read
  (so ``_ATTN_CP = _TP`` brings the TP group's construction: the shared-TP case of
  ``race_guard.SHARED_TP_CAVEAT``), the parameters they read, any module function
  that builds such a group (``_init_attn_cp_overlap_group``, parallel_state.py
  0.5.18:1973, called at :2541), and the
  getters the targets and ``rehearsal.install_cp_group`` go through. The guard holds
  a group by its ``group_name`` and the ranks decide which communicator a gather runs
  on: a rename or a new partition changes this piece.
- ``coordinator``: ``GroupCoordinator.__init__``, its whole signature
  (``rehearsal.cpu_gather_group`` passes what it accepts) and only the statements that
  set what is read of it: ``unique_name`` (the guard), ``cpu_group`` (the rehearsal's
  barrier) and what the gathers below read of ``self`` (so 0.5.7's new HIP log line,
  parallel_state.py 0.5.7:398, does not count);
  ``_get_unique_name``, ``_register_group`` and ``_groups`` (the rehearsal's CPU kernel
  finds the group by name there), ``init_model_parallel_group``,
  ``init_distributed_environment`` (the rehearsal starts gloo with it), the gathers
  the targets and the DCP gathers call (``all_gather_into_tensor``,
  ``_all_gather_into_tensor``, ``cp_all_gather_into_tensor_async``, ``all_gather``) and
  the custom op ``reg_all_gather_into_tensor`` the rehearsal gives a CPU kernel. Where
  pynccl is off, 0.5.6's ``cp_all_gather_into_tensor_async`` calls the op, 0.5.6.post2's
  and 0.5.7's call ``all_gather_into_tensor`` (parallel_state.py 0.5.6.post2:764,
  0.5.7:787): the post release has 0.5.7's digest, not 0.5.6's.
- ``allocator``: ``pynccl_allocator``'s ``SymmetricMemoryContext`` (the hooks of
  ``context_hooks`` replace its ``__enter__``/``__exit__``; the guard reads its
  ``group_coordinator``; the pool fix reads its ``__init__``), ``use_symmetric_memory``,
  ``is_symmetric_memory_enabled``, ``get_nccl_mem_pool``, the C source of the
  allocator (when a segment is registered, and with which communicator), the
  ``disable_/restore_symmetric_memory_context`` pair, and ``dp_attention``'s
  ``is_allocation_symmetric`` and ``attn_cp/attn_tp_all_gather_into_tensor``, which
  the targets call.
- ``guarded gathers``: the functions outside the register that open a symmetric
  context in the register's modules and in ``layers/dcp/comm.py`` (the DCP gathers,
  0.5.15:121, 222, and ``cp_all_gather_rerange_launch`` on the overlap group, 0.5.18-0.5.19):
  the guard keeps their contexts off the pool by group.
- ``get_parallel``: whether ``get_parallel()`` answers stamped values
  (``override_permanently``, which ``rehearsal.install_cp_group`` uses from 0.5.20)
  or reads through, and the code of ``runtime_context.ParallelContext``,
  ``get_parallel`` and every module-level name they read.
"""

from __future__ import annotations

import ast
import copy
import hashlib
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from sglang_cp_symm.engine.race_guard import GUARDED_GROUPS
from sglang_cp_symm.releases import Release
from sglang_cp_symm.targets import ALLOCATION_SYMMETRIC_MODULE, SYMMETRIC_CONTEXT_MODULE, targets_for
from maint.source_survey import module_path

Reader = Callable[[str], Optional[str]]

PARALLEL_STATE = "sglang.srt.distributed.parallel_state"
RUNTIME_CONTEXT = "sglang.srt.runtime_context"
DCP_COMM = "sglang.srt.layers.dcp.comm"
#: the attention-TP group's name; a guarded group where a target gathers on it (0.5.6-0.5.8)
ATTENTION_TP = "attention_tp"
ATTENTION_TP_GETTER = "get_attention_tp_group()"

#: (module, function) that build groups: the slices of ``groups`` are taken from their bodies
GROUP_BUILDERS = ((PARALLEL_STATE, "initialize_model_parallel"),
                  (ALLOCATION_SYMMETRIC_MODULE, "initialize_dp_attention"))
#: the getters of each group, by the group's name
GROUP_GETTERS = {
    "attn_cp": ((PARALLEL_STATE, "get_attn_cp_group"), (ALLOCATION_SYMMETRIC_MODULE, "get_attention_cp_group")),
    "attn_cp_overlap": ((PARALLEL_STATE, "get_attn_cp_overlap_group"),),
    "dcp": ((PARALLEL_STATE, "get_dcp_group"),),
    ATTENTION_TP: ((PARALLEL_STATE, "get_attn_tp_group"), (ALLOCATION_SYMMETRIC_MODULE, "get_attention_tp_group")),
}
#: the gathers of ``GroupCoordinator`` that the targets and the DCP gathers call
COORDINATOR_GATHERS = ("all_gather_into_tensor", "_all_gather_into_tensor", "cp_all_gather_into_tensor_async",
                       "all_gather")
#: what ``GroupCoordinator.__init__`` sets that is read from outside: the guard's name, the rehearsal's barrier group
COORDINATOR_READ = ("unique_name", "cpu_group")
#: the other pieces: name -> ((module, selector), ...); a selector is a dotted def or class, or ``NAME=`` for the
#: module-level assignments of NAME
PIECES = {
    "coordinator": tuple((PARALLEL_STATE, s) for s in (
        "_get_unique_name", "_register_group", "_groups=", "init_model_parallel_group", "init_distributed_environment",
        "reg_all_gather_into_tensor") + tuple(f"GroupCoordinator.{m}" for m in COORDINATOR_GATHERS)),
    "allocator": tuple((SYMMETRIC_CONTEXT_MODULE, s) for s in (
        "SymmetricMemoryContext", "use_symmetric_memory", "is_symmetric_memory_enabled", "get_nccl_mem_pool",
        "nccl_allocator_source=", "disable_symmetric_memory_context", "restore_symmetric_memory_context"))
    + tuple((ALLOCATION_SYMMETRIC_MODULE, s) for s in (
        "is_allocation_symmetric", "attn_cp_all_gather_into_tensor", "attn_tp_all_gather_into_tensor")),
}
SYMMETRIC_OPENER = "use_symmetric_memory"
ABSENT = "absent"


# -- normalised code ---------------------------------------------------------------------------


def _without_docstrings(node: ast.AST) -> ast.AST:
    node = copy.deepcopy(node)
    for sub in ast.walk(node):
        body = getattr(sub, "body", None)
        if (isinstance(sub, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            sub.body = body[1:] or [ast.Pass()]
    return node


def _dump(nodes: Iterable[ast.AST]) -> str:
    return "\n".join(ast.dump(_without_docstrings(n), include_attributes=False) for n in nodes)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _code_digest(node: ast.AST) -> str:
    return _hash(_dump([node]))


def _module_level(tree: ast.Module) -> List[ast.stmt]:
    """The module's statements, with those inside module-level ``if``/``try`` blocks (0.5.6 defines the custom op
    under ``if supports_custom_op():``)."""
    out: List[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            blocks = [node.body, node.orelse] + ([node.finalbody] + [h.body for h in node.handlers]
                                                 if isinstance(node, ast.Try) else [])
            out.extend(_module_level(ast.Module(body=[s for b in blocks for s in b], type_ignores=[])))
        else:
            out.append(node)
    return out


def _defines(node: ast.AST) -> List[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def select(tree: ast.Module, selector: str) -> List[ast.AST]:
    """The nodes ``selector`` names in ``tree``: ``a.b`` a def or class (the last of that name, as Python keeps it),
    ``NAME=`` every module-level assignment of NAME; [] when absent."""
    if selector.endswith("="):
        return [n for n in _module_level(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                and selector[:-1] in _defines(n)]
    body: Sequence[ast.AST] = _module_level(tree)
    node: Optional[ast.AST] = None
    for part in selector.split("."):
        matches = [n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                   and n.name == part]
        if not matches:
            return []
        node = matches[-1]
        body = getattr(node, "body", [])
    return [node] if node is not None else []


def _metadata_fields(tree: ast.Module) -> tuple:
    fields = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("ContextParallelMetadata"):
            fields |= {s.target.id for s in node.body
                       if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return tuple(sorted(fields))


# -- the groups: slices of the functions that build them ----------------------------------------------


def _name(node: ast.AST) -> Optional[str]:
    """``x`` for a name, ``self.x`` for an attribute of ``self`` (what ``GroupCoordinator.__init__`` sets)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    return None


def _names(node: ast.AST, ctx: type) -> set:
    return {_name(n) for n in ast.walk(node) if _name(n) and isinstance(getattr(n, "ctx", None), ctx)}


def _writes(stmt: ast.AST) -> set:
    """Names ``stmt`` assigns, or changes in place (``group_ranks.append(ranks)``, ``d[k] = v``)."""
    out = _names(stmt, ast.Store)
    for n in ast.walk(stmt):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and _name(n.func.value):
            out.add(_name(n.func.value))
        if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store) and _name(n.value):
            out.add(_name(n.value))
    return out


def _free_names(stmt: ast.AST) -> set:
    """Names ``stmt`` reads before it writes them (by position: ``group_ranks = []`` then a loop appending to it
    reads nothing from outside)."""
    first: Dict[str, tuple] = {}
    for n in ast.walk(stmt):
        name = _name(n)
        if name:
            key = (n.lineno, n.col_offset)
            if name not in first or key < first[name][0]:
                first[name] = (key, isinstance(n.ctx, ast.Load))
    return {name for name, (_, load) in first.items() if load}


def _builds(node: ast.AST, names: set, builders: set) -> bool:
    """Whether ``node`` builds a group named in ``names``: a ``group_name="..."`` argument, or a call of a module
    function that has one."""
    for sub in ast.walk(node):
        if (isinstance(sub, ast.keyword) and sub.arg == "group_name" and isinstance(sub.value, ast.Constant)
                and sub.value.value in names):
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in builders:
            return True
    return False


def statement_slice(function: ast.FunctionDef, anchor: Callable[[ast.stmt], bool],
                    whole_signature: bool = False) -> List[ast.AST]:
    """The statements of ``function``'s body that ``anchor`` picks, the earlier statements whose values they read
    (back to an unconditional assignment), the ``global`` declarations of what they assign, and the parameters they
    read with their defaults (every parameter with ``whole_signature``)."""
    body = function.body
    chosen = {i for i, stmt in enumerate(body) if not isinstance(stmt, ast.Global) and anchor(stmt)}
    if not chosen:
        return []
    writes = [set() if isinstance(stmt, ast.Global) else _writes(stmt) for stmt in body]
    todo = sorted(chosen)
    while todo:
        i = todo.pop()
        for name in _free_names(body[i]):
            for j in range(i - 1, -1, -1):
                stmt = body[j]
                if name not in writes[j]:
                    continue
                if j not in chosen:
                    chosen.add(j)
                    todo.append(j)
                if isinstance(stmt, ast.Assign) and name in {_name(t) for t in stmt.targets}:
                    break  # an unconditional assignment: nothing earlier reaches the read
    stored = set().union(*(writes[i] for i in chosen))
    read = set().union(*(_free_names(body[i]) for i in chosen))
    nodes: List[ast.AST] = []
    for stmt in body:
        if isinstance(stmt, ast.Global) and set(stmt.names) & stored:
            nodes.append(ast.Global(names=sorted(set(stmt.names) & stored)))
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for arg, default in list(zip(positional, defaults)) + list(zip(args.kwonlyargs, args.kw_defaults)):
        if whole_signature or arg.arg in read:
            nodes.append(ast.Tuple(elts=[ast.Constant(arg.arg), default or ast.Constant(None)], ctx=ast.Load()))
    nodes.extend(body[i] for i in sorted(chosen))
    return nodes


def group_slice(function: ast.FunctionDef, names: set, builders: set = frozenset()) -> List[ast.AST]:
    """The slice of ``function`` that builds the groups ``names`` (``_builds``)."""
    return statement_slice(function, lambda stmt: _builds(stmt, names, builders))


def guarded_group_names(release: Release) -> set:
    """The names whose construction ``groups`` covers: the guard's, and the attention-TP group where a target of the
    register gathers on it."""
    names = set(GUARDED_GROUPS)
    if any(t.group == ATTENTION_TP_GETTER for t in targets_for(release)):
        names.add(ATTENTION_TP)
    return names


# -- the pieces ---------------------------------------------------------------------------------------


class Sources:
    """The release's modules, parsed once each (None: not in the release, or not Python that parses)."""

    def __init__(self, read: Reader):
        self.read, self.trees = read, {}

    def tree(self, module: str) -> Optional[ast.Module]:
        if module not in self.trees:
            text = self.read(module_path(module))
            try:
                self.trees[module] = None if text is None else ast.parse(text)
            except (SyntaxError, ValueError):
                self.trees[module] = None
        return self.trees[module]

    def nodes(self, module: str, selector: str) -> List[ast.AST]:
        tree = self.tree(module)
        return [] if tree is None else select(tree, selector)


def _piece(parts: List[tuple]) -> str:
    """One digest of [(label, [nodes])]; ``absent`` where nothing was found."""
    found = [(label, nodes) for label, nodes in parts if nodes]
    if not found:
        return ABSENT
    return _hash("\n".join(f"{label}\n{_dump(nodes)}" for label, nodes in found))


def groups_piece(sources: Sources, release: Release) -> str:
    names = guarded_group_names(release)
    parts = []
    for module, function in GROUP_BUILDERS:
        tree = sources.tree(module)
        if tree is None:
            continue
        builders = {n.name for n in _module_level(tree) if isinstance(n, ast.FunctionDef) and n.name != function
                    and _builds(n, names, set())}
        parts.append((f"{module}:builders", [n for n in _module_level(tree) if isinstance(n, ast.FunctionDef)
                                             and n.name in builders]))
        for node in select(tree, function):
            parts.append((f"{module}:{function}", group_slice(node, names, builders)))
    for name in sorted(names):
        for module, getter in GROUP_GETTERS.get(name, ()):
            parts.append((f"{module}:{getter}", sources.nodes(module, getter)))
    return _piece(parts)


def guarded_gathers_piece(sources: Sources, release: Release) -> str:
    targets = targets_for(release)
    owned = {(t.module, t.function.split(".")[0]) for t in targets}
    parts = []
    for module in sorted({t.module for t in targets} | {DCP_COMM}):
        tree = sources.tree(module)
        if tree is None:
            continue
        for node in _module_level(tree):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (module, node.name) not in owned
                    and SYMMETRIC_OPENER in _names(node, ast.Load)):
                parts.append((f"{module}:{node.name}", [node]))
    return _piece(parts)


def coordinator_init(sources: Sources) -> List[ast.AST]:
    """``GroupCoordinator.__init__``: its signature (``rehearsal.cpu_gather_group`` passes what it accepts) and the
    statements that set what the guard, the rehearsal and ``COORDINATOR_GATHERS`` read of ``self``."""
    init = sources.nodes(PARALLEL_STATE, "GroupCoordinator.__init__")
    if not init:
        return []
    wanted = {f"self.{a}" for a in COORDINATOR_READ}
    for method in COORDINATOR_GATHERS:
        for node in sources.nodes(PARALLEL_STATE, f"GroupCoordinator.{method}"):
            wanted |= {n for n in _names(node, ast.Load) if n.startswith("self.")}
    return statement_slice(init[0], lambda stmt: bool(_names(stmt, ast.Store) & wanted), whole_signature=True)


def _closure(tree: ast.Module, roots: List[ast.AST]) -> List[ast.AST]:
    """``roots`` and every module-level def or assignment they read by name, transitively, in module order."""
    level = _module_level(tree)
    by_name: Dict[str, List[ast.AST]] = {}
    for node in level:
        for name in _defines(node):
            by_name.setdefault(name, []).append(node)
    chosen = {id(n) for n in roots}
    todo = list(roots)
    while todo:
        for name in _names(todo.pop(), ast.Load):
            for node in by_name.get(name, []):
                if id(node) not in chosen:
                    chosen.add(id(node))
                    todo.append(node)
    return [n for n in level if id(n) in chosen]


def get_parallel_piece(sources: Sources):
    tree = sources.tree(RUNTIME_CONTEXT)
    text = sources.read(module_path(RUNTIME_CONTEXT))
    if tree is None or text is None:
        return ABSENT
    mode = "stamped" if "def override_permanently" in text else "read-through"
    roots = select(tree, "get_parallel") + select(tree, "ParallelContext")
    level = _module_level(tree)
    functions = {n.name: n for n in level if isinstance(n, ast.FunctionDef)}
    for node in level:  # module-level calls that change the class (0.5.20+ install its properties)
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                and "ParallelContext" in _names(functions.get(node.value.func.id, ast.Pass()), ast.Load)):
            roots += [node, functions[node.value.func.id]]
    return (mode, _hash(_dump(_closure(tree, roots))))


def shape_of(read: Reader, release: Release) -> Dict[str, object]:
    """{target name: (code digest, metadata fields) or "absent"} and {"groups", "coordinator", "allocator",
    "guarded gathers": digest or "absent"} and "get_parallel": (stamped/read-through, digest) or "absent"."""
    sources = Sources(read)
    shape: Dict[str, object] = {}
    for target in targets_for(release):
        tree = sources.tree(target.module)
        node = sources.nodes(target.module, target.function)
        if tree is None or not node or not isinstance(node[0], ast.FunctionDef):
            shape[target.name] = ABSENT
            continue
        code = [node[0]]
        if "." in target.function:
            code += sources.nodes(target.module, target.function.rsplit(".", 1)[0] + ".__init__")
        shape[target.name] = (_hash(_dump(code)), _metadata_fields(tree))
    shape["groups"] = groups_piece(sources, release)
    for name, selectors in PIECES.items():
        extra = [("GroupCoordinator.__init__", coordinator_init(sources))] if name == "coordinator" else []
        shape[name] = _piece(extra + [(f"{m}:{s}", sources.nodes(m, s)) for m, s in selectors])
    shape["guarded gathers"] = guarded_gathers_piece(sources, release)
    shape["get_parallel"] = get_parallel_piece(sources)
    return shape


def digest(shape: Dict[str, object]) -> str:
    """One release's digest: every piece of its shape."""
    return _hash(repr(sorted(shape.items())))


SHARED = ("groups", "coordinator", "allocator", "guarded gathers", "get_parallel")


def describe_change(previous: Dict[str, object], current: Dict[str, object]) -> str:
    """What differs from the previous release's shape, in words."""
    if not previous:
        return "first supported release"
    changes = []
    for name in sorted(set(previous) | set(current), key=lambda n: (n in SHARED, n)):
        before, after = previous.get(name), current.get(name)
        if before == after:
            continue
        if name == "get_parallel":
            changes.append(f"get_parallel() {after[0] if isinstance(after, tuple) else after}"
                           if not isinstance(before, tuple) or not isinstance(after, tuple) or before[0] != after[0]
                           else "get_parallel() code")
        elif name in SHARED:
            changes.append(f"{name} {'absent' if after == ABSENT else 'new' if before == ABSENT else 'code'}")
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
    """One row per supported release: {release, post_same, change, digest, shape, proved_on, unproved}.

    ``proved_on``: the releases of ``proved`` with the same digest; ``unproved``: True when there is none (the
    release, or for a post release its own release's line, must join set "ci"). ``post_same``: a post release
    with its release's digest. ``wheels``: paths of sglang wheels; ``proved``: the releases CI proves.
    """
    from maint.patches import wheel_reader

    shapes = {}
    for wheel in wheels:
        version = wheel_release(wheel.name)
        if version is None or not is_supported_version(version):
            continue
        shapes[version] = shape_of(wheel_reader(wheel), Release.parse(version))
    digests = {version: digest(shape) for version, shape in shapes.items()}
    proved_by: Dict[str, list] = {}
    for version in proved:
        if version in digests:
            proved_by.setdefault(digests[version], []).append(version)
    rows, previous = [], {}
    for version in sorted(shapes, key=_order):
        shape = shapes[version]
        post = ".post" in version
        on = sorted(proved_by.get(digests[version], []), key=Release.parse)
        same = post and digests[version] == digests.get(version.split(".post")[0])
        rows.append({"release": version, "post_same": same,
                     "change": describe_change(previous, shape), "digest": digests[version], "shape": shape,
                     "targets": [n for n in shape if n not in SHARED], "proved_on": on, "unproved": not on})
        if not post:
            previous = shape
    return rows


def is_supported_version(version: str) -> bool:
    from sglang_cp_symm.targets import is_supported

    return is_supported(Release.parse(version.split(".post")[0]))
