"""Move exactly one statement of a target function into the symmetric-memory context.

The edit is made on the function's source text, located with the ``ast`` module:
the single statement that assigns the all-gather's output buffer is indented one
level and preceded by::

    with use_symmetric_memory(
        <group>, disabled=not is_allocation_symmetric()
    ):

Nothing else moves. In particular the ``F.pad`` that only shorter ranks run stays
outside, because window registration is collective and a pool miss on some
ranks only would hang all of them. The same text edit yields the runtime
function (``patching``) and the source diffs in ``patches/``, so the two cannot
drift apart.

Every assumption is checked; a function of another shape raises ``ShapeMismatch``
with the reason, and the caller leaves it untouched.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass

from ..targets import (
    ALLOCATION_SYMMETRIC_MODULE,
    ALLOCATION_SYMMETRIC_NAME,
    SYMMETRIC_CONTEXT_MODULE,
    SYMMETRIC_CONTEXT_NAME,
    Target,
)


class ShapeMismatch(Exception):
    """The function does not have the shape the register describes."""


class NoGatherCall(ShapeMismatch):
    """The function makes no all-gather of (output, input) at all (a helper of that name, or a stub)."""


@dataclass(frozen=True)
class Edit:
    """Where the output allocation is, relative to the text that was parsed."""

    first_line: int  # 0-based index of the allocation statement's first line
    last_line: int  # 0-based index of its last line (inclusive)
    indent: str
    group_text: str


def _root_name(node: ast.AST) -> str | None:
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


def find_gather_call(func: ast.AST, target: Target) -> ast.Call:
    """The one call on the target's kind of group that takes (output, input) as its first two arguments."""
    calls = [
        node
        for node in ast.walk(func)
        if isinstance(node, ast.Call)
        and len(node.args) >= 2
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == target.output
        and _root_name(node.args[1]) == target.input
        and _group_kind(ast.unparse(node.func)) == _group_kind(target.group)
    ]
    if len(calls) != 1:
        error = NoGatherCall if not calls else ShapeMismatch
        raise error(f"expected one all-gather call taking ({target.output}, {target.input}); found {len(calls)}")
    return calls[0]


def _is_symmetric_context(item: ast.withitem) -> bool:
    call = item.context_expr
    if isinstance(call, ast.Name):  # `ctx = use_symmetric_memory(...) if ... ; with ctx:`
        return True
    return isinstance(call, ast.Call) and _root_name(call.func) == SYMMETRIC_CONTEXT_NAME


def already_in_context(func: ast.AST, target: Target) -> bool:
    """True when the output is assigned inside a ``with`` whose context is a symmetric one."""
    for node in ast.walk(func):
        if isinstance(node, ast.With) and any(_is_symmetric_context(i) for i in node.items):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == target.output for t in inner.targets
                ):
                    return True
    return False


def _blocks(node: ast.AST):
    """Every statement list in ``node`` (bodies, else branches, handlers...)."""
    for child in ast.walk(node):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(child, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block


def _assigns_output(stmt: ast.stmt, target: Target) -> bool:
    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == target.output)


def _allocation_before(func: ast.AST, call: ast.Call, target: Target) -> ast.Assign:
    """The statement that allocates the buffer handed to ``call``: the nearest assignment of the output
    before the gather, in the gather's own block (0.5.8 allocates it inside an ``if``)."""
    holders = [(block, index) for block in _blocks(func) for index, stmt in enumerate(block)
               if any(node is call for node in ast.walk(stmt))]
    if not holders:  # pragma: no cover - a call always sits in some statement
        raise ShapeMismatch("the all-gather is not in a statement block")
    # The innermost statement holding the call: the one with the shortest span.
    block, index = min(holders, key=lambda h: h[0][h[1]].end_lineno - h[0][h[1]].lineno)
    for previous in reversed(block[:index]):
        if _assigns_output(previous, target):
            if not isinstance(previous.value, ast.Call):
                raise ShapeMismatch(f"{target.output} is not assigned from an allocating call")
            return previous
        if any(isinstance(n, ast.Name) and n.id == target.output and isinstance(n.ctx, ast.Store)
               for n in ast.walk(previous)):
            break  # assigned in a nested statement: not a plain allocation
    raise ShapeMismatch(f"no allocation of {target.output} right before the all-gather in its block")


def find_output_edit(func_source: str, target: Target) -> Edit:
    """Locate the output allocation in a function's source (as ``inspect.getsource`` returns it)."""
    text, func = _parse_single_function(func_source)
    if already_in_context(func, target):
        raise ShapeMismatch("the output is already allocated in a symmetric context")
    call = find_gather_call(func, target)
    if isinstance(call.func, ast.Attribute):
        receiver = ast.unparse(call.func.value)
        if receiver != ast.unparse(ast.parse(target.group, mode="eval").body):
            raise ShapeMismatch(
                f"the all-gather runs on {receiver!r}, not on the register's group {target.group!r}"
            )

    assign = _allocation_before(func, call, target)
    lines = text.splitlines()
    first = assign.lineno - 1
    last = assign.end_lineno - 1
    line = lines[first]
    indent = line[: len(line) - len(line.lstrip())]
    return Edit(first_line=first, last_line=last, indent=indent, group_text=target.group)


@dataclass(frozen=True)
class SendEdit:
    """Where the all-gather's input argument is, relative to the text that was parsed."""

    line: int  # 0-based
    start_col: int
    end_col: int
    arg_text: str
    group_text: str
    stream_text: str


STAGE_SEND_NAME = "cp_symm_stage_send"


def _parse_single_function(func_source: str) -> tuple[str, ast.AST]:
    text = textwrap.dedent(func_source)
    try:
        module = ast.parse(text)
    except SyntaxError as exc:  # pragma: no cover - sources shipped in wheels parse
        raise ShapeMismatch(f"source does not parse: {exc}") from None
    funcs = [n for n in module.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(funcs) != 1:
        raise ShapeMismatch("source is not a single function definition")
    if funcs[0].decorator_list:
        raise ShapeMismatch("decorated functions are not rewritten")
    return text, funcs[0]


def find_send_edit(func_source: str, target: Target) -> SendEdit:
    """Locate the all-gather's input argument, to route it through a staged symmetric buffer."""
    text, func = _parse_single_function(func_source)
    call = find_gather_call(func, target)
    arg = call.args[1]
    if arg.lineno != arg.end_lineno:
        raise ShapeMismatch("the all-gather's input spans several lines")
    # The group the gather runs on: its receiver, or for a function-form gather the register's group.
    group = ast.unparse(call.func.value) if isinstance(call.func, ast.Attribute) else target.group
    stream = ast.unparse(call.args[2]) if len(call.args) >= 3 else "None"
    line = text.splitlines()[arg.lineno - 1]
    # ast columns count UTF-8 bytes; the sources we patch are ASCII on these lines.
    return SendEdit(arg.lineno - 1, arg.col_offset, arg.end_col_offset,
                    line[arg.col_offset:arg.end_col_offset], group, stream)


def apply_send_edit(lines: list[str], edit: SendEdit) -> list[str]:
    index = edit.line
    line = lines[index]
    staged = f"{STAGE_SEND_NAME}({edit.arg_text}, {edit.group_text}, {edit.stream_text})"
    return lines[:index] + [line[: edit.start_col] + staged + line[edit.end_col :]] + lines[index + 1 :]


def context_lines(edit: Edit) -> list[str]:
    i = edit.indent
    return [
        f"{i}with {SYMMETRIC_CONTEXT_NAME}(",
        f"{i}    {edit.group_text}, disabled=not {ALLOCATION_SYMMETRIC_NAME}()",
        f"{i}):",
    ]


def apply_edit(lines: list[str], edit: Edit) -> list[str]:
    """Return ``lines`` with the allocation at ``edit`` moved into the context."""
    first, last = edit.first_line, edit.last_line
    moved = [("    " + l) if l.strip() else l for l in lines[first : last + 1]]
    return lines[:first] + context_lines(edit) + moved + lines[last + 1 :]


def rewrite_function_source(func_source: str, target: Target, output: bool = True, send: bool = False) -> str:
    """The function's source (dedented) with the output allocation inside the symmetric context
    (``output``) and/or the all-gather's input routed through a staged symmetric buffer (``send``).

    The send edit changes one line in place, so the output edit's line numbers stay valid.
    """
    if not (output or send):
        raise ValueError("nothing to rewrite")
    lines = textwrap.dedent(func_source).splitlines()
    if send:
        lines = apply_send_edit(lines, find_send_edit(func_source, target))
    if output:
        lines = apply_edit(lines, find_output_edit(func_source, target))
    new_text = "\n".join(lines) + "\n"
    check = ast.parse(new_text).body[0]  # self-check: it parses, and the edits are there
    if output and not already_in_context(check, target):  # pragma: no cover - guarded by construction
        raise ShapeMismatch("rewrite did not place the output in the context")
    if send and STAGE_SEND_NAME not in new_text:  # pragma: no cover
        raise ShapeMismatch("rewrite did not stage the send buffer")
    return new_text


#: Names the rewritten code uses, and where sglang defines them.
REQUIRED_NAMES = {
    SYMMETRIC_CONTEXT_NAME: SYMMETRIC_CONTEXT_MODULE,
    ALLOCATION_SYMMETRIC_NAME: ALLOCATION_SYMMETRIC_MODULE,
}
