"""Stage A: the rewritten function keeps what callers can see, and the patcher refuses what it cannot keep.

Each test writes a real module file, imports it and rewrites one of its functions with
the patcher's own ``compile_rewritten`` / ``plan_target``. The module names its own
``use_symmetric_memory`` and ``is_allocation_symmetric`` (two lines that return a null
context and True), so the rewritten function can run here without sglang; the names
sglang itself provides are covered on a real release by test_rewrite_refusals.py
(the positive control) and test_patch_failures.py.
"""

import importlib
import inspect
import itertools
import linecache
import sys
import textwrap

import pytest
import torch

from sglang_cp_symm.engine.patching import Refused, compile_rewritten, is_rewritten, plan_target
from sglang_cp_symm.releases import Release
from sglang_cp_symm.targets import Target

PRELUDE = '''
import functools
import torch
import torch.nn.functional as F
from contextlib import nullcontext
from typing import Optional

CALLS = []


def use_symmetric_memory(group, disabled=False):
    CALLS.append(("context", group, disabled))
    return nullcontext()


def is_allocation_symmetric():
    return True


class _Group:
    def cp_all_gather_into_tensor_async(self, output, input_, stream=None):
        output.copy_(torch.cat([input_, input_]))


_GROUP = _Group()


def get_attention_cp_group():
    return _GROUP


def made(value):
    CALLS.append(("default", value))
    return [value]


DEFAULT_STREAM = object()
'''

BODY = '''
    max_len = (total_len + cp_size - 1) // cp_size
    pad = max_len - x.shape[0]
    if pad > 0:
        x = F.pad(x, (0, 0, 0, pad))
    out = torch.empty(max_len * cp_size, *x.shape[1:], device=x.device, dtype=x.dtype)
    get_attention_cp_group().cp_all_gather_into_tensor_async(out, x, stream)
    return out
'''

counter = itertools.count()


def target(function: str = "gather", module: str = "") -> Target:
    return Target(name="identity.gather", module=module, function=function, output="out", input="x",
                  group="get_attention_cp_group()", first=Release.parse("0.5.6"), last=Release.parse("0.5.23"),
                  fixed_in=None, fixed_by="", drop_when="never", uniform=("total_len", "cp_size"))


@pytest.fixture
def load(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))

    def load(text: str):
        name = f"cp_symm_identity_{next(counter)}"
        (tmp_path / f"{name}.py").write_text(PRELUDE + textwrap.dedent(text))
        module = importlib.import_module(name)
        return module, target(module=name)

    yield load
    for name in [n for n in sys.modules if n.startswith("cp_symm_identity_")]:
        del sys.modules[name]


X = torch.arange(6.0).reshape(3, 2)


def test_defaults_kwdefaults_annotations_and_attributes_are_the_originals(load):
    module, t = load('''
        def gather(x: torch.Tensor, total_len: int, cp_size: int, forward_batch=made("positional"),
                   stream: Optional[object] = DEFAULT_STREAM, *, tag=made("keyword")) -> torch.Tensor:
            """The original's docstring."""
    ''' + BODY.replace("\n    ", "\n            ").replace(", stream)", ", None)"))
    original = module.gather
    original.custom = {"set": "by someone"}
    del module.DEFAULT_STREAM  # a default naming a global that has gone away: never evaluated again
    defaults_made = [c for c in module.CALLS if c[0] == "default"]
    new = compile_rewritten(original, t, module)
    assert [c for c in module.CALLS if c[0] == "default"] == defaults_made  # no default built again
    assert new is not original and is_rewritten(new)
    assert new.__defaults__ is original.__defaults__
    assert new.__defaults__[0] is original.__defaults__[0]  # the very list made at import
    assert new.__kwdefaults__ is original.__kwdefaults__
    assert new.__annotations__ is original.__annotations__
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        assert getattr(new, attribute) == getattr(original, attribute), attribute
    assert new.custom is original.custom
    assert new.__wrapped__ is original and inspect.unwrap(new) is original
    assert inspect.signature(new) == inspect.signature(original)
    assert new.__globals__ is module.__dict__
    assert (new.__code__.co_filename, new.__code__.co_firstlineno, new.__code__.co_qualname) == (
        original.__code__.co_filename, original.__code__.co_firstlineno, original.__code__.co_qualname)
    assert torch.equal(new(X, 6, 2), original(X, 6, 2))
    assert ("context", module._GROUP, False) in module.CALLS  # the copy opens the context; the original does not
    assert "with use_symmetric_memory(" in new.__sglang_cp_symm_source__


def test_a_method_keeps_super_and_private_names(load):
    module, t = load('''
        class Base:
            def __init__(self, cp_size):
                self.cp_size = cp_size


        class Strategy(Base):
            def __init__(self, cp_size):
                super().__init__(cp_size)
                self.__seen = 0

            def gather(self, x, total_len, cp_size, stream=None):
                self.__seen += 1
                self.__base = super().__init__
    ''' + BODY.replace("\n    ", "\n                "))
    original = module.Strategy.__dict__["gather"]
    assert "__class__" in original.__code__.co_freevars  # super() needs the class cell
    new = compile_rewritten(original, target("Strategy.gather", t.module), module)
    assert new.__closure__ is original.__closure__
    strategy = module.Strategy(2)
    assert torch.equal(new(strategy, X, 6, 2), original(strategy, X, 6, 2))
    assert strategy._Strategy__seen == 2  # mangled as in the class


def test_a_closure_keeps_its_cells(load):
    module, t = load('''
        def factory(scale):
            def gather(x, total_len, cp_size, stream=None):
                x = x * scale
    ''' + BODY.replace("\n    ", "\n                ") + '''
            return gather


        gather = factory(3)
    ''')
    original = module.gather
    new = compile_rewritten(original, target("factory.<locals>.gather", t.module), module)
    assert new.__closure__ is original.__closure__
    assert torch.equal(new(X, 6, 2), original(X, 6, 2)) and torch.equal(new(X, 6, 2)[:3], X * 3)


@pytest.mark.parametrize("binding,reason", [
    ("gather = traced(gather)", "a wrapper around another function"),
    ("gather = untraced(gather)", "bound to .*wrapper, not to the function the register names"),
    ("gather = other.gather", "bound to .*other_gather, not to the function the register names"),
    ("gather = functools.partial(gather, cp_size=2)", "not a plain function"),
])
def test_a_wrapper_or_alias_bound_by_assignment_is_refused_and_kept(load, binding, reason):
    """``f = deco(f)`` and aliases: rewriting the function inside would drop what the module made of it."""
    module, t = load(textwrap.dedent('''
        def traced(function):
            @functools.wraps(function)
            def wrapper(*args, **kwargs):
                return function(*args, **kwargs)
            return wrapper


        def untraced(function):
            def wrapper(*args, **kwargs):
                return function(*args, **kwargs)
            return wrapper


        class other:
            @staticmethod
            def gather(x, total_len, cp_size, stream=None):
                return x
        other.gather.__qualname__ = "other_gather"


        def gather(x, total_len, cp_size, stream=None):
    ''' + BODY.replace("\n    ", "\n            ")) + "\n\n" + binding + "\n")
    bound = module.gather
    with pytest.raises(Refused, match=reason) as refused:
        plan_target(t, module, output=True, send=False)
    assert refused.value.state == "skipped"
    assert module.gather is bound


def test_the_same_function_of_another_module_is_refused(load):
    module, t = load('''
        def gather(x, total_len, cp_size, stream=None):
    ''' + BODY.replace("\n    ", "\n            "))
    other, _ = load('''
        def gather(x, total_len, cp_size, stream=None):
    ''' + BODY.replace("\n    ", "\n            "))
    module.gather = other.gather  # an alias: same name, same shape, another module's globals
    with pytest.raises(Refused, match=f"defined in {other.__name__}, not in {module.__name__}"):
        plan_target(t, module, output=True, send=False)
    assert module.gather is other.gather


def test_a_source_file_changed_after_import_is_refused(load):
    module, t = load('''
        def gather(x, total_len, cp_size, stream=None):
    ''' + BODY.replace("\n    ", "\n            "))
    path = module.__file__
    with open(path) as handle:
        text = handle.read()
    with open(path, "w") as handle:  # the same lines, another allocation: not the code that runs
        handle.write(text.replace("out = torch.empty(max_len * cp_size", "out = torch.zeros(max_len * cp_size"))
    linecache.checkcache(path)
    with pytest.raises(Refused, match="does not match the function in memory"):
        plan_target(t, module, output=True, send=False)


def test_a_default_built_by_a_call_is_never_built_again(load):
    module, t = load('''
        def gather(x, total_len, cp_size, stream=None, scratch=made("once")):
    ''' + BODY.replace("\n    ", "\n            "))
    before = list(module.CALLS)
    for _ in range(3):
        new = compile_rewritten(module.gather, t, module)
    assert module.CALLS == before and new.__defaults__[1] is module.gather.__defaults__[1]
