"""Read a target function's syntax tree and prove, or refuse, the facts the rewrite's safety rule needs.

``rewrite`` states the rule (its docstring) and makes the edits; this module answers
its questions about one function, conservatively: which statement allocates the
buffer handed to the all-gather, whether a symmetric context already holds it (also
through an alias), whether each size expression is the same on every rank (rule 3),
whether the statement runs on every path (rule 4), and where each name the inserted
code reads is bound (rule 7). Anything it cannot decide is a ``ShapeMismatch`` with
the reason, never a guess.
"""

from __future__ import annotations

import ast
import textwrap
from collections import Counter
from typing import Dict, FrozenSet, Iterable, Iterator, List, Optional, Tuple

from ..targets import SYMMETRIC_CONTEXT_NAME, Target


class ShapeMismatch(Exception):
    """The function does not have the shape the safety rule accepts; it is left as it was."""


class NoGatherCall(ShapeMismatch):
    """The function makes no all-gather of (output, input) at all (a helper of that name, or a stub)."""


class AlreadyInContext(ShapeMismatch):
    """The allocation handed to the gather is already inside a symmetric context: nothing to move."""

    def __init__(self, message: str, group: str = "") -> None:
        super().__init__(message)
        self.group = group  # the group expression of that context, as the function writes it


class AlreadyStaged(ShapeMismatch):
    """The gather's send buffer is already staged or allocated in a symmetric context: nothing to wrap."""



STAGE_SEND_NAME = "cp_symm_stage_send"
DEFAULT_CONTEXT_NAMES: FrozenSet[str] = frozenset({SYMMETRIC_CONTEXT_NAME})

ALLOCATORS = ("empty", "zeros")  # torch.<name>(*size, ...)
INPUT_ALLOCATORS = ("new_empty", "new_zeros")  # <input>.<name>(size, ...)
SIZE_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)
SHAPE_ATTRIBUTES = ("shape", "ndim", "dtype", "device")
SHAPE_METHODS = ("size", "dim", "numel")
SHAPE_PRESERVING = ("contiguous",)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)



def root_name(node: ast.AST) -> Optional[str]:
    """``padded_x`` for ``padded_x``, ``padded_x.contiguous()`` and ``padded_x[:n]``."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        else:
            return None


def _group_kind(text: str) -> str:
    """"tp" for a gather on the attention-TP group (0.5.6-0.5.8), else "cp"; from the call's own text."""
    return "tp" if ("attention_tp" in text or "attn_tp" in text) else "cp"


def own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node`` that runs in its scope: nested functions, lambdas and classes are yielded
    themselves but not entered."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        yield child
        if not isinstance(child, _SCOPES):
            stack.extend(ast.iter_child_nodes(child))


def stores(nodes: Iterable[ast.AST]) -> Iterator[Tuple[str, ast.AST]]:
    """(name, node) for every binding made by ``nodes``: assignments, deletions, imports, nested definitions,
    exception and match captures (comprehension variables too: over-counting only refuses more)."""
    for node in nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            yield node.id, node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                yield (alias.asname or alias.name.split(".")[0]), node
        elif isinstance(node, ast.ExceptHandler) and node.name:
            yield node.name, node
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            yield node.name, node
        elif isinstance(node, ast.MatchMapping) and node.rest:
            yield node.rest, node


def normalised(text: str) -> str:
    return ast.unparse(ast.parse(text, mode="eval").body)


def sent(node: ast.AST) -> ast.AST:
    """The gather's input argument, seen through a staging call already in the source (``patches/`` 0002)."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == STAGE_SEND_NAME
            and node.args):
        return node.args[0]
    return node


def find_gather_call(func: ast.AST, target: Target) -> ast.Call:
    """The one call on the target's kind of group that takes (output, input) as its first two arguments."""
    calls = [
        node
        for node in ast.walk(func)
        if isinstance(node, ast.Call)
        and len(node.args) >= 2
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == target.output
        and root_name(sent(node.args[1])) == target.input
        and _group_kind(ast.unparse(node.func)) == _group_kind(target.group)
    ]
    if len(calls) != 1:
        error = NoGatherCall if not calls else ShapeMismatch
        raise error(f"expected one all-gather call taking ({target.output}, {target.input}); found {len(calls)}")
    return calls[0]


class _NotUniform(Exception):
    """An expression the rule cannot prove the same on every rank; the message says which part."""


class FunctionProof:
    """One target function, read once: its gather, its blocks and bindings, and the rule's checks."""

    def __init__(self, func: ast.AST, target: Target, context_names: Iterable[str], text: str = "") -> None:
        self.func, self.target, self.text = func, target, text
        self.context_names = frozenset(context_names) | DEFAULT_CONTEXT_NAMES
        self.nodes = list(own_nodes(func))
        self.parent: Dict[int, ast.AST] = {}
        self.block_of: Dict[int, Tuple[list, int]] = {}  # id(stmt) -> (its statement list, its index)
        for node in [func] + self.nodes:
            if node is not func and isinstance(node, _SCOPES):
                continue
            for _field, value in ast.iter_fields(node):
                children = value if isinstance(value, list) else [value]
                for index, child in enumerate(children):
                    if isinstance(child, ast.AST):
                        self.parent[id(child)] = node
                        if isinstance(value, list) and isinstance(child, ast.stmt):
                            self.block_of[id(child)] = (value, index)
        self.stored = Counter(name for name, _ in stores(self.nodes))
        self.store_nodes: Dict[str, List[ast.AST]] = {}
        for name, node in stores(self.nodes):
            self.store_nodes.setdefault(name, []).append(node)
        args = func.args
        self.positional = {a.arg for a in args.posonlyargs + args.args}
        self.other_params = {a.arg for a in args.kwonlyargs} | {a.arg for a in (args.vararg, args.kwarg) if a}
        self.declared = {normalised(text) for text in target.uniform}
        self.gather = find_gather_call(func, target)
        if not any(node is self.gather for node in self.nodes):
            raise ShapeMismatch("the all-gather is inside a nested function")
        self.gather_stmt = self.statement_of(self.gather)
        arg = sent(self.gather.args[1])  # a staged copy has the input's shape
        self.input = target.input
        # The input's shape is usable only when the gather sends the input itself (not a slice of it).
        self.input_whole = isinstance(arg, ast.Name) or (
            isinstance(arg, ast.Call) and not arg.args and not arg.keywords
            and isinstance(arg.func, ast.Attribute) and arg.func.attr in SHAPE_PRESERVING
            and isinstance(arg.func.value, ast.Name))
        self._checking: set = set()

    # -- structure -------------------------------------------------------------------
    def statement_of(self, node: ast.AST) -> ast.stmt:
        while not isinstance(node, ast.stmt):
            node = self.parent[id(node)]
        return node

    def chain(self, stmt: ast.stmt) -> List[Tuple[ast.AST, list, int]]:
        """From ``stmt`` up to the function: (the compound statement holding the block, the block, the index of
        the path's statement in it), innermost first; the last holder is the function itself."""
        out = []
        while stmt is not self.func:
            block, index = self.block_of[id(stmt)]
            holder = self.parent[id(stmt)]
            out.append((holder, block, index))
            while not isinstance(holder, ast.stmt):  # an except handler or a match case: up to its statement
                holder = self.parent[id(holder)]
            stmt = holder
        return out

    def dominates(self, earlier: ast.stmt, later: ast.stmt) -> bool:
        """True when ``earlier`` runs before ``later`` on every path that reaches ``later``."""
        if id(earlier) not in self.block_of:
            return False
        block, index = self.block_of[id(earlier)]
        return any(b is block and index < i for _, b, i in self.chain(later))

    # -- contexts --------------------------------------------------------------------
    def symmetric_call(self, node: ast.AST) -> Optional[ast.Call]:
        """The ``use_symmetric_memory(...)`` call ``node`` is (or, for a local bound once, was bound to)."""
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id in self.context_names) or (
                    isinstance(f, ast.Attribute) and f.attr == SYMMETRIC_CONTEXT_NAME):
                return node
            return None
        if isinstance(node, ast.IfExp):  # `use_symmetric_memory(...) if x.is_cuda else nullcontext()`
            return self.symmetric_call(node.body) or self.symmetric_call(node.orelse)
        if isinstance(node, ast.Name) and self.stored[node.id] == 1 and node.id not in self.positional:
            (store,) = self.store_nodes[node.id]
            owner = self.parent.get(id(store))
            if isinstance(owner, ast.Assign) and len(owner.targets) == 1 and owner.targets[0] is store:
                return self.symmetric_call(owner.value)
        return None

    def context_group(self, with_node: ast.With) -> Optional[str]:
        for item in with_node.items:
            call = self.symmetric_call(item.context_expr)
            if call is not None:
                if call.args:
                    return ast.unparse(call.args[0])
                for keyword in call.keywords:
                    if keyword.arg == "group_coordinator":
                        return ast.unparse(keyword.value)
                return ""
        return None

    def opens_a_context(self) -> bool:
        return any(isinstance(n, ast.Call) and self.symmetric_call(n) is not None for n in self.nodes)

    # -- the output ----------------------------------------------------------------------
    def output_allocation(self) -> Tuple[str, ast.stmt, Optional[str]]:
        """("in context", statement, group), or ("to move" / "not adjacent", the assignment nearest before the
        gather, None); refuses other shapes."""
        out = self.target.output
        gather_block, gather_index = self.block_of[id(self.gather_stmt)]
        if any(name == out for name, _ in stores(own_nodes_of(self.gather_stmt))):
            raise ShapeMismatch(f"the all-gather's statement also assigns {out}")
        for index in range(gather_index - 1, -1, -1):
            stmt = gather_block[index]
            if not any(name == out for name, _ in stores([stmt, *own_nodes_of(stmt)])):
                continue
            if isinstance(stmt, ast.With):
                group = self.context_group(stmt)
                last = next((s for s in reversed(stmt.body)
                             if any(n == out for n, _ in stores([s, *own_nodes_of(s)]))), None)
                if group is not None and isinstance(last, ast.Assign):
                    return "in context", stmt, group
            if isinstance(stmt, ast.Assign):
                for holder, _, _ in self.chain(stmt):
                    if isinstance(holder, ast.With) and self.context_group(holder) is not None:
                        return "in context", holder, self.context_group(holder)
                return ("to move" if index == gather_index - 1 else "not adjacent"), stmt, None
            kind = {ast.If: "an if statement", ast.AnnAssign: "an annotated assignment",
                    ast.AugAssign: "an augmented assignment", ast.For: "a loop", ast.While: "a loop",
                    ast.Try: "a try statement", ast.With: "a with statement"}.get(type(stmt), type(stmt).__name__)
            raise ShapeMismatch(f"{out} is assigned right before the all-gather by {kind}, not by one allocation")
        raise ShapeMismatch(f"no allocation of {out} right before the all-gather in its block")

    def check_path(self, stmt: ast.stmt) -> None:
        """Rule 4: ``stmt`` is reached on every rank where the function runs."""
        for holder, block, index in self.chain(stmt):
            if holder is not self.func:
                if not isinstance(holder, ast.If):
                    kind = {ast.For: "a loop", ast.AsyncFor: "a loop", ast.While: "a loop", ast.Try: "a try statement",
                            ast.ExceptHandler: "a try statement", ast.With: "a with statement (not a symmetric context)",
                            ast.match_case: "a match statement"}.get(type(holder), type(holder).__name__)
                    raise ShapeMismatch(f"the allocation of {self.target.output} is inside {kind}")
                self.uniform(holder.test, holder, "the condition of the if around the allocation")
            for earlier in block[:index]:
                self.check_exits(earlier)

    def check_exits(self, stmt: ast.stmt) -> None:
        """Every return, raise and assert in ``stmt`` (which runs before the allocation) is under uniform ifs."""
        for node in [stmt, *own_nodes_of(stmt)]:
            if not isinstance(node, (ast.Return, ast.Raise, ast.Assert)):
                continue
            what = type(node).__name__.lower()
            if isinstance(node, ast.Assert):
                self.uniform(node.test, node, "an assert before the allocation")
            elif node is stmt:
                raise ShapeMismatch(f"a {what} before the allocation leaves the function on every path")
            holder = node
            while holder is not stmt:
                holder = self.parent[id(holder)]
                if isinstance(holder, ast.If):
                    self.uniform(holder.test, holder, f"the condition of an early {what}")
                elif isinstance(holder, (ast.stmt, ast.excepthandler, ast.match_case)):
                    raise ShapeMismatch(f"an early {what} before the allocation sits in a "
                                        f"{type(holder).__name__.lower()} statement")

    def check_allocation(self, stmt: ast.stmt) -> bool:
        """Rule 2 and 3 for the statement to move; returns True when its allocator is ``torch.<name>``."""
        out = self.target.output
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == out):
            raise ShapeMismatch(f"the statement before the all-gather is not a plain assignment of {out}")
        value = stmt.value
        if not isinstance(value, ast.Call):
            raise ShapeMismatch(f"{out} is not assigned from an allocating call")
        func = value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name.endswith("_like"):
            raise ShapeMismatch(f"{out} = {name}(...) copies the size of another tensor, which is not proved "
                                "the same on every rank")
        uses_torch = (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                      and func.value.id == "torch" and func.attr in ALLOCATORS)
        on_input = (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and func.value.id == self.input and func.attr in INPUT_ALLOCATORS)
        if uses_torch and self.stored["torch"]:
            raise ShapeMismatch("the function rebinds the name torch")
        if not (uses_torch or on_input):
            raise ShapeMismatch(f"{out} is assigned from {ast.unparse(func)}(...), not one of the allocations the "
                                f"rewrite knows (torch.empty, torch.zeros, {self.input}.new_empty, "
                                f"{self.input}.new_zeros)")
        if on_input:
            self.input_property(func.value, stmt, "the tensor new_empty copies its dtype from")
            if len(value.args) != 1:
                raise ShapeMismatch(f"{ast.unparse(func)} takes one size argument here")
        if not value.args:
            raise ShapeMismatch(f"the allocation of {out} has no size argument")
        for keyword in value.keywords:
            if keyword.arg is None:
                raise ShapeMismatch(f"the allocation of {out} takes **keywords")
            if keyword.arg == "out":
                raise ShapeMismatch(f"the allocation of {out} has an out= argument (it writes into an existing tensor)")
            if keyword.arg not in ("dtype", "device"):
                raise ShapeMismatch(f"the allocation of {out} takes {keyword.arg}=, which the rule does not cover")
            if not (isinstance(keyword.value, ast.Attribute) and isinstance(keyword.value.value, ast.Name)
                    and keyword.value.value.id == "torch" and not self.stored["torch"]):
                self.uniform(keyword.value, stmt, f"the {keyword.arg} of {out}")
        for arg in value.args:
            self.uniform(arg, stmt, f"the size of {out}")
        return uses_torch

    def check_lines(self, stmt: ast.stmt) -> None:
        """The statement has its lines to itself, and indenting it changes no string."""
        lines = self.text.splitlines()
        first, last = stmt.lineno - 1, stmt.end_lineno - 1
        if lines[first][: stmt.col_offset].strip() or lines[last][stmt.end_col_offset:].strip()[:1] not in ("", "#"):
            raise ShapeMismatch(f"the allocation of {self.target.output} shares its line with another statement")
        for node in ast.walk(stmt):
            if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and node.lineno != node.end_lineno:
                raise ShapeMismatch(f"the allocation of {self.target.output} holds a string that spans lines")

    def already_staged(self) -> Optional[str]:
        """Why the send buffer needs no staging (already staged, or allocated in a symmetric context), or None."""
        for node in self.nodes:
            if isinstance(node, ast.Call) and root_name(node.func) == STAGE_SEND_NAME:
                return "the function already stages its send buffer (sglang-cp-symm's patches/ applied)"
        for node in self.nodes:
            if isinstance(node, ast.With) and self.context_group(node) is not None and any(
                    name == self.input for name, _ in stores(own_nodes_of(node))):
                return f"{self.input} is already allocated in a symmetric context"
        return None

    # -- uniformity (rule 3) ----------------------------------------------------------------
    def uniform(self, expr: ast.AST, at: ast.AST, what: str) -> None:
        try:
            self._uniform(expr, self.statement_of(at) if not isinstance(at, ast.stmt) else at)
        except _NotUniform as exc:
            raise ShapeMismatch(f"{what}: {exc}") from None

    def _uniform(self, expr: ast.AST, at: ast.stmt) -> None:
        text = ast.unparse(expr)
        if isinstance(expr, ast.Constant):
            if expr.value is None or isinstance(expr.value, (bool, int, str)):
                return
            raise _NotUniform(f"{text!r} is not an integer constant")
        if text in self.declared:
            self._declared(expr, text)
            return
        if isinstance(expr, ast.Name):
            self._uniform_name(expr.id, at)
        elif isinstance(expr, ast.BinOp) and isinstance(expr.op, SIZE_OPERATORS):
            self._uniform(expr.left, at)
            self._uniform(expr.right, at)
        elif isinstance(expr, ast.UnaryOp) and isinstance(expr.op, (ast.USub, ast.UAdd)):
            self._uniform(expr.operand, at)
        elif isinstance(expr, (ast.Tuple, ast.List)):
            for element in expr.elts:
                self._uniform(element, at)
        elif isinstance(expr, ast.Starred):
            self._uniform(expr.value, at)
        elif self._is_input_property(expr):
            self.input_property(expr, at, text)
        else:
            raise _NotUniform(f"{text!r} is not proved the same on every rank")

    def _declared(self, expr: ast.AST, text: str) -> None:
        for node in [expr, *ast.walk(expr)]:
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if node.id in self.other_params:
                    raise _NotUniform(f"{node.id!r} is a keyword-only or variadic parameter; the register's "
                                      "facts hold for positional arguments only")
                if self.stored[node.id]:
                    raise _NotUniform(f"{node.id!r} is reassigned in the function, so {text!r} is not the value "
                                      "the register vouches for")

    def _uniform_name(self, name: str, at: ast.stmt) -> None:
        if name in self.positional or name in self.other_params:
            raise _NotUniform(f"parameter {name!r} is not one the register declares the same on every rank")
        stores = self.store_nodes.get(name, [])
        if not stores:
            raise _NotUniform(f"{name!r} is not a local the rule can follow")
        if len(stores) != 1:
            raise _NotUniform(f"{name!r} is assigned {len(stores)} times")
        owner = self.parent.get(id(stores[0]))
        if not (isinstance(owner, ast.Assign) and len(owner.targets) == 1 and owner.targets[0] is stores[0]):
            raise _NotUniform(f"{name!r} is not bound by a plain assignment")
        if not self.dominates(owner, at):
            raise _NotUniform(f"{name!r} is not assigned on every path before it is used")
        if name in self._checking:
            raise _NotUniform(f"{name!r} depends on itself")
        self._checking.add(name)
        try:
            self._uniform(owner.value, owner)
        finally:
            self._checking.discard(name)

    def _is_input_property(self, expr: ast.AST) -> bool:
        node = expr
        if isinstance(node, ast.Subscript):
            index = node.slice
            bounds = [index.lower, index.upper, index.step] if isinstance(index, ast.Slice) else [index]
            if not all(b is None or _int_constant(b) for b in bounds):
                return False
            node = node.value
            if not (isinstance(node, ast.Attribute) and node.attr == "shape"):
                return False
        if isinstance(node, ast.Call):
            if node.keywords or len(node.args) > 1 or not all(_int_constant(a) for a in node.args):
                return False
            node = node.func
            if not (isinstance(node, ast.Attribute) and node.attr in SHAPE_METHODS):
                return False
        elif not (isinstance(node, ast.Attribute) and node.attr in SHAPE_ATTRIBUTES):
            return False
        return isinstance(node.value, ast.Name) and node.value.id == self.input

    def input_property(self, expr: ast.AST, at: ast.stmt, text: str) -> None:
        """``expr`` reads the gather's input where it already is the tensor the gather sends."""
        if not self.input_whole:
            raise _NotUniform(f"{text!r}: the all-gather sends {ast.unparse(self.gather.args[1])}, not "
                              f"{self.input} itself")
        end = self.gather_stmt.end_lineno
        for node in self.store_nodes.get(self.input, []):
            if at.lineno <= node.lineno <= end:
                raise _NotUniform(f"{text!r}: {self.input} is reassigned between there and the all-gather")
        for node in self.nodes:
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.endswith("_")
                    and not node.func.attr.startswith("_") and root_name(node.func.value) == self.input
                    and at.lineno <= node.lineno <= end):
                raise _NotUniform(f"{text!r}: {self.input}.{node.func.attr}() may change its shape before the "
                                  "all-gather")

    # -- names the inserted code reads (rule 7) -------------------------------------------
    def names_at(self, texts: Iterable[str], point: ast.stmt) -> Dict[str, str]:
        """{name: "local" or "global"} for the names read by ``texts``, inserted right before ``point``."""
        found: Dict[str, str] = {}
        for text in texts:
            for node in ast.walk(ast.parse(text, mode="eval")):
                if isinstance(node, ast.Name):
                    found[node.id] = self._where(node.id, point)
        return found

    def _where(self, name: str, point: ast.stmt) -> str:
        if name in self.positional or name in self.other_params:
            return "local"
        stores = self.store_nodes.get(name, [])
        if not stores:
            return "global"
        bound = [self.statement_of(s) if not isinstance(s, ast.stmt) else s for s in stores]
        if any(self.dominates(stmt, point) for stmt in bound):
            return "local"
        raise ShapeMismatch(f"the inserted code reads {name!r}, which is not bound on every path before it")


def own_nodes_of(stmt: ast.AST) -> List[ast.AST]:
    return list(own_nodes(stmt))


def _int_constant(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def parse_single_function(func_source: str) -> Tuple[str, ast.AST]:
    text = textwrap.dedent(func_source)
    try:
        module = ast.parse(text)
    except SyntaxError as exc:  # pragma: no cover - sources shipped in wheels parse
        raise ShapeMismatch(f"source does not parse: {exc}") from None
    funcs = [n for n in module.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(funcs) != 1 or len(module.body) != 1:
        raise ShapeMismatch("source is not a single function definition")
    func = funcs[0]
    if func.decorator_list:
        raise ShapeMismatch("decorated functions are not rewritten")
    if isinstance(func, ast.AsyncFunctionDef):
        raise ShapeMismatch("coroutines are not rewritten")
    for node in own_nodes(func):
        if isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)):
            raise ShapeMismatch("generators are not rewritten")
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            raise ShapeMismatch(f"the function declares {type(node).__name__.lower()} names")
    return text, func


def read_function(func_source: str, target: Target, context_names: Iterable[str]) -> FunctionProof:
    text, func = parse_single_function(func_source)
    return FunctionProof(func, target, context_names, text)
