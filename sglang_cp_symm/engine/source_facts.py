"""What the installed sglang's source shows for each register target, read as text, without importing sglang.

The plan (``plan``) decides from these facts, not from the release number: a
development, local, post or vendor build can carry a source that differs from the
release it names, and the source is what runs. The engine and the doctor read the
same files with the same functions here, so they cannot disagree:

- ``module_text`` finds a module's file the way the import system will (the module
  already imported: its ``__file__``; otherwise the top-level package's spec, which
  ``importlib.util.find_spec`` gives without importing anything, so editable and
  ``PYTHONPATH`` installs are read where they are);
- ``target_state`` runs the rewrite's own proofs (``rewrite``) over the function's text:
  ``needs patch`` (output allocated outside the symmetric context, in the one shape the
  rewrite proves rank-uniform), ``upstream`` (already inside), ``absent``, or
  ``changed shape`` (with the reason the rewrite refuses it);
- ``pool_state`` reads the allocator module for sglang PR #21392's registration of
  every segment with every communicator (``upstream``), the plugin's ``patches/``
  (``patched``), or neither (``needs fix``).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from typing import NamedTuple, Optional

from .rewrite import AlreadyStaged, NoGatherCall, ShapeMismatch, already_in_context, find_gather_call, find_output_edit, find_send_edit
from ..targets import Target

NEEDS_PATCH, UPSTREAM, ABSENT, CHANGED = "needs patch", "upstream", "absent", "changed shape"
NEEDS_FIX, PATCHED_SOURCE = "needs fix", "patched"
#: What sglang PR #21392 (0.5.12) added to the allocator: segments registered with every communicator at context exit.
UPSTREAM_POOL_MARK = "_register_segments_for_comm"
#: What ``patches/`` (0001) leaves in the allocator module: the CP pool chooser the context's ``__init__`` calls.
PATCHED_POOL_MARK = "_cp_symm_pool"
#: A source file larger than this is not read (no sglang module comes near it; a device file or a mistake could).
MAX_SOURCE_BYTES = 8 << 20


class SourceFact(NamedTuple):
    """One target (or the pool) as its installed source shows it. ``staged``: the function already stages its
    send buffer (``patches/`` 0002 applied), the reason in words, else ""."""

    state: str
    detail: str = ""
    staged: str = ""


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


def target_state(text: Optional[str], target: Target) -> SourceFact:
    """One target in one module's source text (None: the module is not there)."""
    if text is None:
        return SourceFact(ABSENT, "module not in this release")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError) as exc:
        return SourceFact(CHANGED, f"module does not parse: {str(exc)[:120]}")
    node = find_function(tree, target.function)
    if node is None:
        return SourceFact(ABSENT, "function not in this release")
    source = function_source(text, node)
    try:
        find_gather_call(node, target)
    except NoGatherCall:  # a helper of that name that gathers nothing itself, or a stub
        return SourceFact(ABSENT, f"function has no all-gather taking ({target.output}, {target.input})")
    except ShapeMismatch as exc:
        return SourceFact(CHANGED, str(exc))
    staged = ""
    try:
        find_send_edit(source, target)
    except AlreadyStaged as exc:  # not another shape: the send staging is in the source already
        staged = str(exc)
    except ShapeMismatch as exc:
        return SourceFact(CHANGED, str(exc))
    if already_in_context(node, target):
        return SourceFact(UPSTREAM, "the installed source allocates the output inside the symmetric context", staged)
    try:
        find_output_edit(source, target)
    except ShapeMismatch as exc:
        return SourceFact(CHANGED, str(exc))
    return SourceFact(NEEDS_PATCH, "output allocated outside the symmetric context", staged)


def pool_state(text: Optional[str]) -> SourceFact:
    """The allocator module (``targets.SYMMETRIC_CONTEXT_MODULE``) as its source shows it."""
    if text is None:
        return SourceFact(ABSENT, "no symmetric-memory allocator in this release")
    if UPSTREAM_POOL_MARK in text:
        return SourceFact(UPSTREAM, "the allocator registers every segment with every communicator at context exit")
    if PATCHED_POOL_MARK in text:
        return SourceFact(PATCHED_SOURCE, "in the source already (sglang-cp-symm's patches/ applied)")
    return SourceFact(NEEDS_FIX, "the allocator registers a segment only with the communicator whose context made it")


def _located(module: str) -> Optional[str]:
    """The file ``module`` is (or will be) imported from, found without importing anything."""
    loaded = sys.modules.get(module)
    path = getattr(loaded, "__file__", None)
    if isinstance(path, str):
        return path
    top, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported to find it
    except (ImportError, ValueError):
        return None
    roots = list(getattr(spec, "submodule_search_locations", None) or []) if spec is not None else []
    for root in roots:
        candidate = os.path.join(root, *rest.split(".")) + ".py"
        if os.path.isfile(candidate):
            return candidate
    return None


def module_text(module: str) -> Optional[str]:
    """The source text of ``module`` as the import system would load it; None where there is no such file or
    it cannot be read as text."""
    path = _located(module)
    if path is None or not path.endswith(".py"):
        return None
    try:
        if os.path.getsize(path) > MAX_SOURCE_BYTES:
            return None
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError, ValueError):
        return None
