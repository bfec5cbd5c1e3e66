"""Build the rewritten copy of an engine function that callers cannot tell from the original.

``patching`` installs the copy in the original's place, so whatever a caller can see
of the function must stay the original's:

- the rewritten source is compiled, never executed as a ``def``: defaults, keyword-only
  defaults and annotations are not evaluated again (a default built by a call keeps
  its value, a default naming a global that has gone away raises nothing), and no
  decorator runs. A function is made from the compiled code object with
  ``types.FunctionType`` on the original's globals, name, ``__defaults__`` (the very
  tuple) and ``__closure__`` (the very cells), and given its ``__kwdefaults__`` (the
  very dict);
- the code is compiled in its own file, in place of the original's lines (the whole
  module is compiled, never run): the compiler sees what it saw at import, so name
  mangling, ``__class__`` for ``super()``, free variables, ``__future__`` imports and
  line numbers are the original's, and so are ``co_filename`` and ``co_qualname``;
- ``functools.update_wrapper`` copies ``__module__``, ``__name__``, ``__qualname__``,
  ``__doc__``, ``__annotations__`` (the same dict), ``__dict__`` and sets
  ``__wrapped__`` to the original.

Before any of that, the function's *unedited* source goes through the same build
and must give the code that runs (``same_code``): that proves the text the rewrite
edits is the function in memory, not a file changed since the import, a
``patches/``-edited tree imported earlier, or another function of that name.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import types
from typing import Callable, Dict, Optional


class RebuildError(Exception):
    """The function cannot be rebuilt faithfully; the caller leaves it as it is."""


def _find_code(code: types.CodeType, qualname: str, name: str, first_line: int) -> Optional[types.CodeType]:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if (const.co_name == name and getattr(const, "co_qualname", qualname) == qualname
                    and const.co_firstlineno == first_line):
                return const
            found = _find_code(const, qualname, name, first_line)
            if found is not None:
                return found
    return None


def build_code(original: Callable, function_source: str, first_line: int,
               compiled: Optional[Dict[tuple, types.CodeType]] = None) -> types.CodeType:
    """The code object of ``function_source`` (one dedented ``def``) compiled as ``original`` was: in its own
    file, in place of the original's lines. The compiler must see the whole module: 3.11, for one, compiles
    ``F.pad(...)`` differently when ``F`` is bound by an ``import`` at module level. ``compiled``: the caller's
    compiles by (module text, file), so that the targets of one module prove against one unedited compile (the
    patcher keeps one while it patches a module; 7 ms a compile of 0.5.11's ``cp_utils.py`` on the CPU machine)."""
    code = original.__code__
    file_lines = linecache.getlines(code.co_filename)
    if not file_lines:
        raise RebuildError(f"the source of {code.co_filename} is not readable")
    old_lines, _ = inspect.getsourcelines(original)
    start = first_line - 1
    if file_lines[start:start + len(old_lines)] != old_lines:  # pragma: no cover - both read the same cache
        raise RebuildError("the function's lines are not where its code says they are")
    first = old_lines[0]
    indent = first[: len(first) - len(first.lstrip())]
    new_lines = [(indent + line if line.strip() else line) + "\n" for line in function_source.splitlines()]
    text = "".join(file_lines[:start] + new_lines + file_lines[start + len(old_lines):])
    key = (text, code.co_filename)
    module_code = None if compiled is None else compiled.get(key)
    if module_code is None:
        try:
            module_code = compile(text, code.co_filename, "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise RebuildError(f"the module does not compile with the function rewritten: {exc}") from None
        if compiled is not None:
            compiled[key] = module_code
    qualname = getattr(original, "__qualname__", original.__name__)
    found = _find_code(module_code, qualname, code.co_name, code.co_firstlineno)
    if found is None:
        raise RebuildError("the compiled module holds no function of that name at that line")
    return found


def same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """True when two code objects do the same (bytecode, names, constants, nested code), line numbers aside."""
    fields = ("co_code", "co_names", "co_varnames", "co_freevars", "co_cellvars", "co_argcount",
              "co_posonlyargcount", "co_kwonlyargcount", "co_flags", "co_name")
    if any(getattr(a, f) != getattr(b, f) for f in fields):
        return False
    if len(a.co_consts) != len(b.co_consts):
        return False
    for x, y in zip(a.co_consts, b.co_consts):
        if isinstance(x, types.CodeType) or isinstance(y, types.CodeType):
            if not (isinstance(x, types.CodeType) and isinstance(y, types.CodeType) and same_code(x, y)):
                return False
        elif type(x) is not type(y) or (x != y and not (x != x and y != y)):  # NaN equals NaN here
            return False
    return True


def prove_source(original: Callable, function_source: str, first_line: int,
                 compiled: Optional[Dict[tuple, types.CodeType]] = None) -> None:
    """Raise ``RebuildError`` unless the unedited source compiles to the code that runs (``compiled``: see
    ``build_code``)."""
    if not same_code(build_code(original, function_source, first_line, compiled), original.__code__):
        raise RebuildError("the source file does not match the function in memory (changed after import, or "
                           "another function of that name); left as it is")


def rebuilt_function(original: Callable, new_source: str, first_line: int) -> Callable:
    """The function ``new_source`` defines, built as ``original`` (see the module docstring)."""
    code = build_code(original, new_source, first_line)
    if code.co_freevars != original.__code__.co_freevars:
        raise RebuildError("the rewritten function would need other free variables")
    new = types.FunctionType(code, original.__globals__, original.__name__, original.__defaults__,
                             original.__closure__)
    new.__kwdefaults__ = original.__kwdefaults__
    functools.update_wrapper(new, original)
    return new


__all__ = ["RebuildError", "build_code", "prove_source", "rebuilt_function", "same_code"]
