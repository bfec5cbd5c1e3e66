"""Move exactly one statement of a target function into the symmetric-memory context, or refuse.

The edit is made on the function's source text, located with the ``ast`` module:
the single statement that allocates the all-gather's output buffer is indented one
level and preceded by::

    with use_symmetric_memory(
        <group>, disabled=not is_allocation_symmetric()
    ):

The same text edit yields the runtime function (``patching``) and the source diffs
in ``patches/``, so the two cannot drift apart.

Safety rule
-----------
Window registration is collective: an allocation moved into the context that is
not the same size, in the same order, on every rank of the group hangs every rank
on a pool miss, or silently mismatches window offsets (sglang #36943, #34230). So
the rewrite accepts one shape, proved from the source, and refuses everything else
(``ShapeMismatch`` with the reason: the function is left exactly as it was, the
target reads ``skipped: <reason>``, strict mode stops the engine at its start):

1. **The function**: one plain ``def`` (no decorator, not ``async``, no ``yield``,
   ``global`` or ``nonlocal``) with exactly one all-gather taking ``(output, input)``
   on the register's kind of group, in its own body (not in a nested function).
   ``patching`` also proves that the source it edits compiles to the code that runs.
2. **One allocation statement**: the statement right before the gather's, in the
   same block, is ``<output> = <allocator>(...)``: one target, one call, its lines to
   itself; the allocator is ``torch.empty`` / ``torch.zeros``, or ``new_empty`` /
   ``new_zeros`` of the gather's input; keywords ``dtype`` and ``device`` only (no
   ``out=``, no ``*_like``, no ``**``). A view, a reshape, a helper's result or a
   second allocation in the statement is refused.
3. **Sizes the same on every rank**, built with ``+ - * // %``, tuples and ``*``
   unpacking from: integer constants; the expressions the register lists as uniform
   for the target (``Target.uniform``: positional parameters never reassigned, or a
   call such as a branch predicate, each with the sglang source that makes it so);
   the gather input's own shape (``x.shape``, ``x.shape[i]``, ``x.shape[i:]``,
   ``x.size(i)``, ``x.ndim``, ``x.numel()``) read where ``x`` already is the tensor
   handed to the gather (no assignment or in-place ``x.*_()`` call in between), because
   ``all_gather_into_tensor`` needs every rank to send the same number of elements, so
   wherever the unpatched gather is well defined these are equal on every rank; and
   local names assigned exactly once, on the allocation's path, from such
   expressions. ``dtype`` and ``device`` are the input's, constants, or uniform. The
   local length, the rank index, a value from per-rank metadata, a keyword-only
   argument, a conditional expression: refused.
4. **Reached on every path**: the allocation and the gather sit in the function
   body or in ``if`` blocks whose conditions are uniform (rule 3), never in a loop,
   ``try``, ``with`` or ``match``; every ``return``, ``raise`` and ``assert`` before the
   allocation is under ``if``\\ s with uniform conditions (an ``assert``'s test uniform
   too). Exceptions raised by calls are not modelled: a call that fails on one rank
   only leaves the unpatched gather waiting the same way.
5. **Contexts**: the output is ``upstream`` (nothing moves) only when the allocation
   handed to the gather is inside a symmetric context: ``use_symmetric_memory``,
   any module name bound to it, or a local bound once to an expression that opens
   it (zigzag's ``ctx = use_symmetric_memory(...) if x.is_cuda else nullcontext()``).
   A function that opens a symmetric context around anything else is refused.
6. **Send staging** wraps the gather's one-line input argument. The staged buffer
   has the input's size (the same contract) and is allocated while the gather's
   arguments are evaluated, so exactly where and as often as the gather runs. Its
   group is the one of the context that holds the output (upstream's or the
   rewrite's own); a function that already stages its input (``patches/`` applied)
   or whose input is already allocated in a symmetric context is left alone
   (``AlreadyStaged``). Staging never depends on per-rank run-time state.
7. **Names**: ``injected_names`` lists every name the inserted code reads; a local
   one must be bound on the path, a global one is resolved by ``patching`` before
   the function changes (refused if missing), so nothing is left to fail later.
8. **Checked result**: the edited function's AST equals the original's with exactly
   that statement wrapped in the context (and the input in the staging call).

The proofs of rules 2-5 and 7 are ``rewrite_proof``'s; this module asks them and
makes the edits.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, Iterable, List, Optional, Tuple

from . import send_staging
from .rewrite_proof import (
    DEFAULT_CONTEXT_NAMES,
    STAGE_SEND_NAME,
    AlreadyInContext,
    AlreadyStaged,
    FunctionProof,
    NoGatherCall,
    ShapeMismatch,
    find_gather_call,
    normalised,
    parse_single_function,
    read_function,
)
from ..targets import (
    ALLOCATION_SYMMETRIC_MODULE,
    ALLOCATION_SYMMETRIC_NAME,
    SYMMETRIC_CONTEXT_MODULE,
    SYMMETRIC_CONTEXT_NAME,
    Target,
)

__all__ = [
    "AlreadyInContext", "AlreadyStaged", "DEFAULT_CONTEXT_NAMES", "Edit", "INJECTABLE", "NoGatherCall",
    "REQUIRED_NAMES", "STAGE_SEND_NAME", "SendEdit", "ShapeMismatch", "already_in_context", "apply_edit",
    "apply_send_edit", "context_lines", "find_gather_call", "find_output_edit", "find_send_edit",
    "injected_names", "output_state", "rewrite_function_source",
]

#: Names the inserted code may use that sglang (or the plugin) defines, and where: ``patching`` injects them
#: into the target module when it lacks them (0.5.10's cp_utils imports neither of the first two).
REQUIRED_NAMES = MappingProxyType({
    SYMMETRIC_CONTEXT_NAME: SYMMETRIC_CONTEXT_MODULE,
    ALLOCATION_SYMMETRIC_NAME: ALLOCATION_SYMMETRIC_MODULE,
})
#: Every name the inserted code may use that the plugin can provide where a module lacks it, and its home.
INJECTABLE = MappingProxyType({**REQUIRED_NAMES, STAGE_SEND_NAME: send_staging.__name__})


@dataclass(frozen=True)
class Edit:
    """Where the output allocation is, relative to the text that was parsed."""

    first_line: int  # 0-based index of the allocation statement's first line
    last_line: int  # 0-based index of its last line (inclusive)
    indent: str
    group_text: str
    statement: str = ""  # the moved statement, unparsed (for reports and tests)
    uses_torch: bool = False  # the allocator is ``torch.<name>``: patching checks the module's ``torch``


@dataclass(frozen=True)
class SendEdit:
    """Where the all-gather's input argument is, relative to the text that was parsed."""

    line: int  # 0-based
    start_col: int
    end_col: int
    arg_text: str
    group_text: str
    stream_text: str


# -- the public checks ---------------------------------------------------------------------


def already_in_context(func: ast.AST, target: Target, context_names: Iterable[str] = DEFAULT_CONTEXT_NAMES) -> bool:
    """True when the allocation handed to the gather is inside a symmetric context (rule 5)."""
    try:
        return FunctionProof(func, target, context_names).output_allocation()[0] == "in context"
    except ShapeMismatch:
        return False


def output_state(func_source: str, target: Target,
                 context_names: Iterable[str] = DEFAULT_CONTEXT_NAMES) -> Tuple[str, str]:
    """("in context", group) when upstream already allocates the output there, ("to move", "") when the
    rule proves the edit; raises ``ShapeMismatch`` otherwise."""
    try:
        find_output_edit(func_source, target, context_names)
    except AlreadyInContext as exc:
        return "in context", exc.group
    return "to move", ""


def find_output_edit(func_source: str, target: Target, context_names: Iterable[str] = DEFAULT_CONTEXT_NAMES) -> Edit:
    """Locate the output allocation in a function's source (as ``inspect.getsource`` returns it) and prove the
    safety rule for it; ``AlreadyInContext`` (a ``ShapeMismatch``) when upstream already put it in a context."""
    fn = read_function(func_source, target, context_names)
    state, stmt, group = fn.output_allocation()
    if state == "in context":
        raise AlreadyInContext("the output is already allocated in a symmetric context", group)
    if fn.opens_a_context():
        raise ShapeMismatch("the function opens a symmetric context around another buffer, not around "
                            f"{target.output}")
    call = fn.gather
    if isinstance(call.func, ast.Attribute):
        receiver = ast.unparse(call.func.value)
        if receiver != normalised(target.group):
            raise ShapeMismatch(
                f"the all-gather runs on {receiver!r}, not on the register's group {target.group!r}"
            )
    uses_torch = fn.check_allocation(stmt)
    if state == "not adjacent":
        raise ShapeMismatch(f"statements run between the allocation of {target.output} and the all-gather")
    fn.check_path(stmt)
    fn.check_lines(stmt)
    fn.names_at([target.group], stmt)
    lines = fn.text.splitlines()
    first, last = stmt.lineno - 1, stmt.end_lineno - 1
    line = lines[first]
    indent = line[: len(line) - len(line.lstrip())]
    return Edit(first_line=first, last_line=last, indent=indent, group_text=target.group,
                statement=ast.unparse(stmt), uses_torch=uses_torch)


def _send_group(fn: FunctionProof) -> str:
    """The group the staged send buffer is allocated for: the one of the context that holds the output."""
    try:
        state, _, context_group = fn.output_allocation()
    except ShapeMismatch:
        state, context_group = "refused", None
    call = fn.gather
    if isinstance(call.func, ast.Attribute):  # the collective runs on its receiver's communicator
        receiver = ast.unparse(call.func.value)
        if state == "in context" and context_group != receiver:
            raise ShapeMismatch(f"the output's context is on {context_group!r} but the all-gather runs on "
                                f"{receiver!r}")
        return receiver
    return context_group if state == "in context" else fn.target.group


def find_send_edit(func_source: str, target: Target, context_names: Iterable[str] = DEFAULT_CONTEXT_NAMES) -> SendEdit:
    """Locate the all-gather's input argument, to route it through a staged symmetric buffer (rule 6)."""
    fn = read_function(func_source, target, context_names)
    staged = fn.already_staged()
    if staged:
        raise AlreadyStaged(staged)
    arg = fn.gather.args[1]
    if arg.lineno != arg.end_lineno:
        raise ShapeMismatch("the all-gather's input spans several lines")
    group = _send_group(fn)
    stream = ast.unparse(fn.gather.args[2]) if len(fn.gather.args) >= 3 else "None"
    fn.names_at([group, stream], fn.gather_stmt)
    line = fn.text.splitlines()[arg.lineno - 1]
    if not line.isascii():  # ast columns count UTF-8 bytes
        raise ShapeMismatch("the all-gather's line is not ASCII")
    return SendEdit(arg.lineno - 1, arg.col_offset, arg.end_col_offset,
                    line[arg.col_offset:arg.end_col_offset], group, stream)


def injected_names(func_source: str, target: Target, output: bool = True, send: bool = False,
                   context_names: Iterable[str] = DEFAULT_CONTEXT_NAMES) -> Dict[str, str]:
    """Every name the inserted code reads: {name: "local" (bound on the path) or "global" (must resolve in the
    module's globals)}. Raises ``ShapeMismatch`` where the edit itself is refused."""
    fn = read_function(func_source, target, context_names)
    names: Dict[str, str] = {}
    if output:
        edit = find_output_edit(func_source, target, context_names)
        stmt = next(s for s in fn.nodes if isinstance(s, ast.stmt) and s.lineno - 1 == edit.first_line)
        names.update({SYMMETRIC_CONTEXT_NAME: "global", ALLOCATION_SYMMETRIC_NAME: "global"})
        names.update(fn.names_at([edit.group_text], stmt))
        if edit.uses_torch:
            names.setdefault("torch", "global")
    if send:
        edit = find_send_edit(func_source, target, context_names)
        names[STAGE_SEND_NAME] = "global"
        names.update(fn.names_at([edit.group_text, edit.stream_text], fn.gather_stmt))
    return names


# -- applying ----------------------------------------------------------------------------------


def apply_send_edit(lines: List[str], edit: SendEdit) -> List[str]:
    index = edit.line
    line = lines[index]
    staged = f"{STAGE_SEND_NAME}({edit.arg_text}, {edit.group_text}, {edit.stream_text})"
    return lines[:index] + [line[: edit.start_col] + staged + line[edit.end_col :]] + lines[index + 1 :]


def context_lines(edit: Edit) -> List[str]:
    i = edit.indent
    return [
        f"{i}with {SYMMETRIC_CONTEXT_NAME}(",
        f"{i}    {edit.group_text}, disabled=not {ALLOCATION_SYMMETRIC_NAME}()",
        f"{i}):",
    ]


def apply_edit(lines: List[str], edit: Edit) -> List[str]:
    """Return ``lines`` with the allocation at ``edit`` moved into the context."""
    first, last = edit.first_line, edit.last_line
    moved = [("    " + l) if l.strip() else l for l in lines[first : last + 1]]
    return lines[:first] + context_lines(edit) + moved + lines[last + 1 :]


def _expected(func: ast.AST, edit: Optional[Edit], send: Optional[SendEdit], gather: ast.Call) -> str:
    """The dump of the function the edits must produce, built on the original's tree (rule 8)."""
    tree = copy.deepcopy(func)
    twin = {id(o): c for o, c in zip(ast.walk(func), ast.walk(tree))}
    if send is not None:
        call = twin[id(gather)]
        call.args[1] = ast.copy_location(ast.Call(ast.Name(STAGE_SEND_NAME, ast.Load()),
                                                  [call.args[1], ast.parse(send.group_text, mode="eval").body,
                                                   ast.parse(send.stream_text, mode="eval").body], []), call.args[1])
    if edit is not None:
        context = ast.parse(f"{SYMMETRIC_CONTEXT_NAME}({edit.group_text}, disabled=not "
                            f"{ALLOCATION_SYMMETRIC_NAME}())", mode="eval").body
        moved = 0
        for node in list(ast.walk(tree)):
            for _field, value in ast.iter_fields(node):
                if isinstance(value, list):
                    for index, stmt in enumerate(value):
                        if isinstance(stmt, ast.Assign) and stmt.lineno - 1 == edit.first_line:
                            value[index] = ast.copy_location(
                                ast.With([ast.withitem(context, None)], [stmt], None), stmt)
                            moved += 1
        if moved != 1:  # pragma: no cover - the line checks make the statement unique on its line
            raise ShapeMismatch("the allocation is not one statement of its own")
    return ast.dump(ast.parse(ast.unparse(ast.fix_missing_locations(tree))).body[0])


def rewrite_function_source(func_source: str, target: Target, output: bool = True, send: bool = False,
                            context_names: Iterable[str] = DEFAULT_CONTEXT_NAMES) -> str:
    """The function's source (dedented) with the output allocation inside the symmetric context
    (``output``) and/or the all-gather's input routed through a staged symmetric buffer (``send``).

    The send edit changes one line in place, so the output edit's line numbers stay valid.
    """
    if not (output or send):
        raise ValueError("nothing to rewrite")
    text, func = parse_single_function(func_source)
    lines = text.splitlines()
    send_edit = find_send_edit(func_source, target, context_names) if send else None
    edit = find_output_edit(func_source, target, context_names) if output else None
    if send_edit is not None:
        lines = apply_send_edit(lines, send_edit)
    if edit is not None:
        lines = apply_edit(lines, edit)
    new_text = "\n".join(lines) + "\n"
    try:
        new_func = ast.parse(new_text).body[0]
    except SyntaxError as exc:  # pragma: no cover - guarded by the line checks
        raise ShapeMismatch(f"the edited function does not parse: {exc}") from None
    gather = find_gather_call(func, target)
    if ast.dump(new_func) != _expected(func, edit, send_edit, gather):  # pragma: no cover - by construction
        raise ShapeMismatch("the edit changed more than the allocation and the send argument")
    return new_text
