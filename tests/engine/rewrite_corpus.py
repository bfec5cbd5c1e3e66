"""The refusal corpus: synthetic targets, one per shape the rewrite cannot prove rank-uniform.

Each case is one function in the shape of sglang's CP all-gathers with one unsafe
change; the safety rule (``sglang_cp_symm.engine.rewrite``'s docstring) must refuse
it with the reason given here, and the patcher must leave the function and its
module exactly as they were. ``BASE`` is the positive control: the same function
without the change, which the rule accepts (so a case is refused for its change,
not for something else). Used by ``test_rewrite_refusals.py`` (the rewrite, stage A)
and by its stage-B test (the patcher on real modules built from these sources).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Tuple

from sglang_cp_symm.releases import Release
from sglang_cp_symm.targets import Target

TARGET = Target(
    name="corpus.gather", module="cp_symm_corpus_case", function="gather", output="out", input="x",
    group="get_attention_cp_group()", first=Release.parse("0.5.6"), last=Release.parse("0.5.23"), fixed_in=None,
    fixed_by="", drop_when="never", uniform=("total_len", "cp_size"),
    uniform_why="declared for the corpus: the callers of sglang's own functions pass these",
)

#: Module-level names the cases use (a CPU group whose gather concatenates the input with itself).
HEADER = '''
import torch
import torch.nn.functional as F
from contextlib import nullcontext


class _Group:
    world_size = 2

    def cp_all_gather_into_tensor_async(self, output, input_, stream=None):
        output.copy_(torch.cat([input_, input_]))


_GROUP = _Group()
RANK = 0


def get_attention_cp_group():
    return _GROUP


def get_attention_cp_rank():
    return RANK


def keep(function):
    return function


def make_buffer(n, like):
    return torch.empty(n, *like.shape[1:], dtype=like.dtype) if RANK == 0 else like.new_zeros(0)
'''

BASE = '''
def gather(x, total_len, cp_size, forward_batch, stream):
    max_len = (total_len + cp_size - 1) // cp_size
    pad = max_len - x.shape[0]
    if pad > 0:
        x = F.pad(x, (0, 0, 0, pad))
    out = torch.empty(max_len * cp_size, *x.shape[1:], device=x.device, dtype=x.dtype)
    get_attention_cp_group().cp_all_gather_into_tensor_async(out, x, stream)
    return out
'''

ALLOC = "    out = torch.empty(max_len * cp_size, *x.shape[1:], device=x.device, dtype=x.dtype)\n"
GATHER = "    get_attention_cp_group().cp_all_gather_into_tensor_async(out, x, stream)\n"


@dataclass(frozen=True)
class Case:
    id: str
    source: str  # the function
    reason: str  # a regular expression the refusal's message matches (the rewrite's and the patcher's)
    context_names: Tuple[str, ...] = ()  # module aliases of use_symmetric_memory the patcher would find
    prelude: str = ""  # module-level lines the case needs before the function

    def module_text(self) -> str:
        return HEADER + self.prelude + "\n\n" + textwrap.dedent(self.source)


def replaced(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


CASES = [
    # -- sizes from per-rank values ------------------------------------------------------------
    Case("size-from-local-length",
         replaced("    pad = max_len - x.shape[0]\n", "    pad = max_len - x.shape[0]\n    local_len = x.shape[0]\n")
         .replace("torch.empty(max_len * cp_size,", "torch.empty(local_len * cp_size,"),
         r"x is reassigned between there and the all-gather"),
    Case("size-from-rank-index", replaced("torch.empty(max_len * cp_size,", "torch.empty(max_len * cp_size + get_attention_cp_rank(),"),
         r"get_attention_cp_rank\(\)' is not proved"),
    Case("size-from-rank-in-local", replaced(ALLOC, "    rank = forward_batch.cp_rank\n" + ALLOC.replace("max_len * cp_size", "(max_len + rank) * cp_size")),
         r"forward_batch.cp_rank' is not proved"),
    Case("size-from-per-rank-metadata",
         replaced("torch.empty(max_len * cp_size,", "torch.empty(forward_batch.attn_cp_metadata.per_rank_actual_token[0] * cp_size,"),
         r"per_rank_actual_token\[0\]' is not proved"),
    Case("size-from-module-global", replaced("torch.empty(max_len * cp_size,", "torch.empty(max_len * cp_size + RANK,"),
         r"'RANK' is not a local the rule can follow"),
    Case("size-from-undeclared-parameter", replaced("torch.empty(max_len * cp_size,", "torch.empty(max_len * cp_size + stream,"),
         r"parameter 'stream' is not one the register declares"),
    Case("size-from-keyword-only-arguments",
         replaced("def gather(x, total_len, cp_size, forward_batch, stream):", "def gather(x, *, total_len, cp_size, forward_batch, stream):"),
         r"keyword-only or variadic parameter"),
    Case("size-from-varargs",
         replaced("def gather(x, total_len, cp_size, forward_batch, stream):", "def gather(x, total_len, *cp_size, forward_batch, stream):"),
         r"keyword-only or variadic parameter"),
    Case("declared-parameter-reassigned", replaced("    max_len = (total_len", "    cp_size = cp_size + get_attention_cp_rank()\n    max_len = (total_len"),
         r"'cp_size' is reassigned in the function"),
    Case("local-assigned-twice", replaced("    if pad > 0:\n", "    if x.shape[0] > max_len:\n        max_len = x.shape[0]\n    if pad > 0:\n"),
         r"'max_len' is assigned 2 times"),
    Case("local-assigned-in-a-branch",
         replaced("    max_len = (total_len + cp_size - 1) // cp_size\n",
                  "    if total_len > 0:\n        max_len = (total_len + cp_size - 1) // cp_size\n"),
         r"'max_len' is not assigned on every path"),
    Case("size-from-conditional-expression", replaced("torch.empty(max_len * cp_size,", "torch.empty(max_len * cp_size if x.is_cuda else 0,"),
         r"is not proved the same on every rank"),
    Case("size-from-walrus", replaced("torch.empty(max_len * cp_size,", "torch.empty((n := max_len) * cp_size,"),
         r"is not proved the same on every rank"),
    Case("size-from-a-float", replaced("torch.empty(max_len * cp_size,", "torch.empty(max_len * cp_size * 1.5,"),
         r"'1.5' is not an integer constant"),
    Case("size-from-a-nested-allocation", replaced("torch.empty(max_len * cp_size,", "torch.empty(torch.empty(max_len).numel() * cp_size,"),
         r"is not proved the same on every rank"),
    Case("shape-of-a-sliced-input", replaced(GATHER, GATHER.replace("(out, x, stream)", "(out, x[:max_len], stream)")),
         r"sends x\[:max_len\], not x itself"),
    Case("shape-changed-in-place", replaced(ALLOC, "    n = x.shape[0]\n    x.squeeze_()\n" + ALLOC.replace("max_len * cp_size", "n * cp_size")),
         r"x\.squeeze_\(\) may change its shape"),
    Case("dtype-from-per-rank-value", replaced("dtype=x.dtype)", "dtype=forward_batch.dtype)"),
         r"the dtype of out: 'forward_batch.dtype' is not proved"),
    Case("device-from-per-rank-value", replaced("device=x.device,", "device=forward_batch.device,"),
         r"the device of out: 'forward_batch.device' is not proved"),
    # -- not the allocation, or not one allocation ----------------------------------------------
    Case("helper-allocating-on-some-ranks", replaced(ALLOC, "    out = make_buffer(max_len * cp_size, x)\n"),
         r"out is assigned from make_buffer\(\.\.\.\), not one of the allocations"),
    Case("view-not-allocation", replaced(ALLOC, ALLOC.replace("out =", "buf =") + "    out = buf.view(-1, *x.shape[1:])\n"),
         r"out is assigned from buf.view\(\.\.\.\), not one of the allocations"),
    Case("reshape-of-an-allocation", replaced(ALLOC, ALLOC.rstrip("\n") + ".reshape(-1, *x.shape[1:])\n"),
         r"reshape\(\.\.\.\), not one of the allocations"),
    Case("empty-like-of-a-per-rank-tensor", replaced(ALLOC, "    out = torch.empty_like(forward_batch.buffer)\n"),
         r"empty_like\(\.\.\.\) copies the size of another tensor"),
    Case("new-empty-of-another-tensor", replaced(ALLOC, "    out = forward_batch.buffer.new_empty((max_len * cp_size,))\n"),
         r"not one of the allocations"),
    Case("out-argument", replaced("dtype=x.dtype)", "dtype=x.dtype, out=forward_batch.buffer)"),
         r"out= argument"),
    Case("other-keyword", replaced("dtype=x.dtype)", "dtype=x.dtype, pin_memory=True)"),
         r"takes pin_memory="),
    Case("double-star-keywords", replaced("dtype=x.dtype)", "**forward_batch.options)"),
         r"takes \*\*keywords"),
    Case("second-allocation-in-the-statement", replaced(ALLOC, "    out, spare = torch.empty(max_len * cp_size), torch.empty(max_len)\n"),
         r"not a plain assignment of out"),
    Case("chained-assignment", replaced(ALLOC, ALLOC.replace("out =", "out = spare =")),
         r"not a plain assignment of out"),
    Case("annotated-assignment", replaced(ALLOC, ALLOC.replace("out =", "out: torch.Tensor =")),
         r"assigned right before the all-gather by an annotated assignment"),
    Case("allocation-shares-its-line", replaced(ALLOC, "    spare = 0; " + ALLOC.lstrip()),
         r"shares its line with another statement"),
    Case("string-spanning-lines", replaced("device=x.device,", 'device="""\ncpu""",'),
         r"holds a string that spans lines"),
    Case("torch-rebound", replaced("    max_len = (total_len", "    torch = forward_batch.backend\n    max_len = (total_len"),
         r"rebinds the name torch"),
    # -- not reached on every path --------------------------------------------------------------
    Case("allocation-chosen-by-an-if",
         replaced(ALLOC, "    if cp_size > 2:\n    " + ALLOC + "    else:\n    " + ALLOC.replace("torch.empty", "torch.zeros")),
         r"out is assigned right before the all-gather by an if statement"),
    Case("allocation-chosen-by-a-conditional-expression",
         replaced(ALLOC, "    out = torch.empty(max_len * cp_size) if x.is_cuda else torch.zeros(max_len * cp_size)\n"),
         r"not assigned from an allocating call"),
    Case("if-on-a-per-rank-condition",
         replaced(ALLOC + GATHER, "    if x.shape[0] > 0:\n    " + ALLOC + "    " + GATHER),
         r"the condition of the if around the allocation: 'x.shape\[0\] > 0' is not proved"),
    Case("early-return-between-allocation-and-use", replaced(GATHER, "    if x.shape[0] == 0:\n        return out\n" + GATHER),
         r"statements run between the allocation of out and the all-gather"),
    Case("early-return-on-a-per-rank-condition", replaced("    pad = max_len", "    if forward_batch.is_empty:\n        return x\n    pad = max_len"),
         r"the condition of an early return: 'forward_batch.is_empty' is not proved"),
    Case("return-before-on-every-path", replaced("    pad = max_len", "    return x\n    pad = max_len"),
         r"leaves the function on every path"),
    Case("raise-in-a-loop-before", replaced("    pad = max_len", "    for n in forward_batch.lens:\n        raise ValueError(n)\n    pad = max_len"),
         r"early raise before the allocation sits in a for statement"),
    Case("assert-on-a-per-rank-value", replaced("    pad = max_len", "    assert x.shape[0] <= forward_batch.max_len\n    pad = max_len"),
         r"an assert before the allocation: 'x.shape\[0\] <= forward_batch.max_len' is not proved"),
    Case("allocation-in-a-loop",
         replaced(ALLOC + GATHER, "    for _ in range(cp_size):\n    " + ALLOC + "    " + GATHER),
         r"inside a loop"),
    Case("allocation-in-a-while-loop",
         replaced(ALLOC + GATHER, "    while pad > 0:\n        pad -= 1\n    " + ALLOC + "    " + GATHER),
         r"inside a loop"),
    Case("try-except-around-the-allocation",
         replaced(ALLOC + GATHER, "    try:\n    " + ALLOC + "    " + GATHER + "    except RuntimeError:\n        raise\n"),
         r"inside a try statement"),
    Case("unknown-context-around-the-allocation",
         replaced(ALLOC + GATHER, "    with torch.no_grad():\n    " + ALLOC + "    " + GATHER),
         r"inside a with statement"),
    Case("match-around-the-allocation",
         replaced(ALLOC + GATHER, "    match cp_size:\n        case _:\n        " + ALLOC + "        " + GATHER),
         r"inside a match statement"),
    # -- contexts -------------------------------------------------------------------------------
    Case("context-around-another-buffer",
         replaced(ALLOC, "    with use_symmetric_memory(get_attention_cp_group()):\n        scratch = torch.empty(max_len)\n" + ALLOC),
         r"opens a symmetric context around another buffer"),
    Case("aliased-context-opened-inside",  # the alias unknown to the rule: never nested, refused
         replaced(ALLOC + GATHER, "    with usm(get_attention_cp_group()):\n    " + ALLOC + "    " + GATHER),
         r"inside a with statement", prelude="usm = lambda group: nullcontext()\n"),
    # -- the function itself ----------------------------------------------------------------------
    Case("gather-in-a-nested-function",
         replaced(ALLOC + GATHER + "    return out\n", "    def inner(x):\n    " + ALLOC + "    " + GATHER + "        return out\n    return inner(x)\n"),
         r"inside a nested function"),
    Case("decorated-in-source", "@keep\n" + BASE.lstrip(), r"decorated functions are not rewritten"),
    Case("coroutine", BASE.replace("def gather", "async def gather"), r"coroutines are not rewritten"),
    Case("generator", BASE.replace("    return out\n", "    yield out\n"), r"generators (and coroutines )?are not rewritten"),
    Case("global-statement", replaced("    max_len = (total_len", "    global RANK\n    max_len = (total_len"),
         r"declares global names"),
    Case("two-gathers", replaced(GATHER, GATHER + GATHER), r"expected one all-gather call taking \(out, x\); found 2"),
    Case("gather-on-another-group", replaced(GATHER, GATHER.replace("get_attention_cp_group()", "get_tp_group()")),
         r"not on the register's group"),
]

#: The alias case the patcher can see through: the module binds another name to sglang's own function, and
#: the function opens that context around the output itself. Nothing may move (nesting raises): "upstream".
ALIASED = Case("aliased-context-known",
               replaced(ALLOC + GATHER, "    with usm(get_attention_cp_group()):\n    " + ALLOC + "    " + GATHER),
               r"already allocated in a symmetric context", context_names=("usm",),
               prelude="from sglang.srt.distributed.device_communicators.pynccl_allocator import "
                       "use_symmetric_memory as usm\n")
