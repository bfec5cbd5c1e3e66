"""Find, unwrap and replace an attribute of an engine module (``fn`` or ``Class.method``).

The target patches (``patching``) and the warm-up/watchdog hooks (``hooks``) both
change attributes of sglang's modules and must both see through a wrapper that is
already there (their own, from an earlier apply), so they share these helpers.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

import wrapt


def resolve(owner: Any, dotted: str) -> Tuple[Any, str, Any]:
    """(object holding the attribute, attribute name, current value) for ``Class.method`` or ``fn``.

    A class attribute is read from the class ``__dict__`` so that a staticmethod or
    classmethod comes back as itself, not as the function it binds.
    """
    *parents, attr = dotted.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, attr, owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)


#: The attribute ``patching`` sets on each function it installs in place of an engine function.
REWRITTEN_MARK = "__sglang_cp_symm_rewritten__"


def unwrap(value: Any) -> Any:
    """The engine's own function under the plugin's wrapt wrapper or rewritten copy; anything else as it is."""
    if isinstance(value, wrapt.FunctionWrapper) or getattr(value, REWRITTEN_MARK, False):
        return value.__wrapped__
    return value


def wrap(module: Any, dotted: str, wrapper: Callable) -> Callable[[], None]:
    """Wrap ``module.<dotted>`` with a wrapt ``wrapper``; returns the function that puts the original back."""
    owner, attr, original = resolve(module, dotted)
    wrapt.wrap_function_wrapper(module, dotted, wrapper)
    return lambda: setattr(owner, attr, original)
