"""Reads, from a release's own source, the names its attention-CP, CP-overlap and DCP groups are built with.

Why: the race guard (``engine/race_guard.py``) recognises the groups it holds by the literal names in
``GUARDED_GROUPS``, compared with ``GroupCoordinator.unique_name`` before its ``:``. If sglang renamed a group, the
guard would silently stop holding it. This module reads the names from the source itself (``ast``, no import), so
``test_group_names.py`` can compare them with the guard, release by release.

The rule, as sglang writes it in every release 0.5.6-0.5.23 (``sglang/srt/distributed/parallel_state.py``):
- a group lives in a module global (``_ATTN_CP``, ``_ATTN_CP_OVERLAP``, ``_DCP``) that an accessor returns
  (``get_attn_cp_group``, ``get_attn_cp_overlap_group``, ``get_dcp_group``);
- the accessor's return value is resolved to globals: a name is the global itself; ``a if c else b`` is both
  branches; a call of a module function is what that function returns; ``get_parallel().X`` (0.5.21+) is the global
  the module puts under key ``X`` (a dict literal ``{"X": _G}`` or a keyword ``X=_G``);
- the global is built by an assignment ``_G = f(..., group_name="literal")``; a call without ``group_name`` is
  followed into the module function it calls; ``_G = _OTHER`` is an alias (``_ATTN_CP = _TP`` when
  ``attn_cp_size == tp_size``), recorded and not followed;
- ``GroupCoordinator.__init__`` sets ``self.unique_name = _get_unique_name(group_name)``, which returns
  ``f"{name}:{n}"``: the prefix the guard compares is the literal.
Anything else (a computed name, an accessor whose value cannot be followed) raises ``Unreadable`` with what was
found, so a change of shape fails the test instead of reading as "no group".
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

PARALLEL_STATE = "sglang/srt/distributed/parallel_state.py"
#: 0.5.6-0.5.8 build the attention-TP group here (the group their NSA CP gathers run on)
DP_ATTENTION = "sglang/srt/layers/dp_attention.py"

#: role -> the parallel_state accessor that returns its group
ACCESSORS = {"attention-CP": "get_attn_cp_group", "CP-overlap": "get_attn_cp_overlap_group", "DCP": "get_dcp_group"}


class Unreadable(Exception):
    """The source does not have the shape the rule above reads."""


@dataclass(frozen=True)
class Built:
    name: str  # the group_name literal
    holder: str  # the module global it is assigned to ("" when built elsewhere)
    where: str  # file:line of the group_name keyword


@dataclass
class Role:
    accessor: str
    holders: Set[str] = field(default_factory=set)
    built: List[Built] = field(default_factory=list)
    aliases: List[Tuple[str, str, int]] = field(default_factory=list)  # (holder, aliased global, line)


@dataclass
class Groups:
    roles: Dict[str, Optional[Role]]  # None: the release has no accessor for this role
    literals: List[Built]  # every group_name literal of parallel_state.py and dp_attention.py
    unique_name_prefix: bool  # GroupCoordinator.unique_name is f"{group_name}:{n}"


def _module_globals(tree: ast.Module) -> Set[str]:
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            names.update(node.names)
    return names


def _functions(tree: ast.Module) -> Dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _group_name_keyword(call: ast.Call) -> Optional[ast.expr]:
    return next((k.value for k in call.keywords if k.arg == "group_name"), None)


def _literals_in(node: ast.AST, path: str, holder: str = "") -> List[Built]:
    out = []
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            value = _group_name_keyword(call)
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out.append(Built(value.value, holder, f"{path}:{value.lineno}"))
    return out


class _Module:
    def __init__(self, source: str, path: str):
        self.path = path
        self.tree = ast.parse(source)
        self.globals = _module_globals(self.tree)
        self.functions = _functions(self.tree)

    def resolve(self, expr: ast.expr, seen: Tuple[str, ...] = ()) -> Set[str]:
        """The module globals ``expr`` (an accessor's return value) can evaluate to."""
        if isinstance(expr, ast.Name) and expr.id in self.globals:
            return {expr.id}
        if isinstance(expr, ast.IfExp):
            return self.resolve(expr.body, seen) | self.resolve(expr.orelse, seen)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in self.functions:
            return self.returns(expr.func.id, seen)
        if (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Call)
                and isinstance(expr.value.func, ast.Name) and expr.value.func.id == "get_parallel"):
            found = self._published_as(expr.attr)
            if found:
                return found
        raise Unreadable(f"{self.path}: cannot follow {ast.unparse(expr)!r} to a module global")

    def returns(self, function: str, seen: Tuple[str, ...] = ()) -> Set[str]:
        if function in seen:
            return set()
        node = self.functions[function]
        values = [r.value for r in ast.walk(node) if isinstance(r, ast.Return) and r.value is not None]
        if not values:
            raise Unreadable(f"{self.path}:{node.lineno}: {function} returns nothing")
        out: Set[str] = set()
        for value in values:
            out |= self.resolve(value, seen + (function,))
        return out

    def _published_as(self, key: str) -> Set[str]:
        out = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and k.value == key and isinstance(v, ast.Name) \
                            and v.id in self.globals:
                        out.add(v.id)
            elif isinstance(node, ast.Call):
                out.update(k.value.id for k in node.keywords if k.arg == key and isinstance(k.value, ast.Name)
                           and k.value.id in self.globals)
        return out

    def builds(self, holder: str) -> Tuple[List[Built], List[Tuple[str, str, int]]]:
        """What is assigned to ``holder``: groups built with a literal name, and aliases of other globals."""
        built, aliases = [], []
        for node in ast.walk(self.tree):
            if not (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == holder
                                                        for t in node.targets)):
                continue
            value = node.value
            if isinstance(value, ast.Constant) and value.value is None:
                continue  # the reset in destroy_model_parallel / the declaration
            if isinstance(value, ast.Name) and value.id in self.globals:
                aliases.append((holder, value.id, node.lineno))
                continue
            if not isinstance(value, ast.Call):
                raise Unreadable(f"{self.path}:{node.lineno}: {holder} = {ast.unparse(value)[:80]!r} is neither a "
                                 "group built by a call nor an alias")
            name = _group_name_keyword(value)
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                built.append(Built(name.value, holder, f"{self.path}:{name.lineno}"))
            elif name is not None:
                raise Unreadable(f"{self.path}:{node.lineno}: {holder} is built with a computed name "
                                 f"{ast.unparse(name)[:60]!r}")
            elif isinstance(value.func, ast.Name) and value.func.id in self.functions:
                inner = _literals_in(self.functions[value.func.id], self.path, holder)
                if not inner:
                    raise Unreadable(f"{self.path}:{node.lineno}: {holder} is built by {value.func.id}, which names "
                                     "no group literally")
                built.extend(inner)
            else:
                raise Unreadable(f"{self.path}:{node.lineno}: {holder} is built by {ast.unparse(value.func)!r} "
                                 "without a group_name")
        return built, aliases

    def unique_name_is_prefixed(self) -> bool:
        """``GroupCoordinator.__init__``: ``self.unique_name = _get_unique_name(group_name)``, and that returns
        an f-string that starts with ``{name}:``."""
        sets = [n for n in ast.walk(self.tree) if isinstance(n, ast.Assign) and len(n.targets) == 1
                and ast.unparse(n.targets[0]) == "self.unique_name"]
        if not any(ast.unparse(n.value) == "_get_unique_name(group_name)" for n in sets):
            return False
        function = self.functions.get("_get_unique_name")
        if function is None:
            return False
        param = function.args.args[0].arg
        for node in ast.walk(function):
            if isinstance(node, ast.JoinedStr) and len(node.values) >= 2:
                first, second = node.values[0], node.values[1]
                if (isinstance(first, ast.FormattedValue) and isinstance(first.value, ast.Name)
                        and first.value.id == param and isinstance(second, ast.Constant)
                        and str(second.value).startswith(":")):
                    return True
        return False


def read_groups(read: Callable[[str], Optional[str]]) -> Groups:
    """The groups of one release; ``read(path)`` gives a file of the wheel (None when absent)."""
    source = read(PARALLEL_STATE)
    if source is None:
        raise Unreadable(f"no {PARALLEL_STATE}")
    module = _Module(source, PARALLEL_STATE)
    roles: Dict[str, Optional[Role]] = {}
    for role, accessor in ACCESSORS.items():
        if accessor not in module.functions:
            roles[role] = None
            continue
        entry = Role(accessor, module.returns(accessor))
        for holder in sorted(entry.holders):
            built, aliases = module.builds(holder)
            entry.built.extend(built)
            entry.aliases.extend(aliases)
        roles[role] = entry
    literals = _literals_in(module.tree, module.path)
    dp_attention = read(DP_ATTENTION)
    if dp_attention is not None:
        literals += _literals_in(ast.parse(dp_attention), DP_ATTENTION)
    return Groups(roles, literals, module.unique_name_is_prefixed())
