"""How to call each CP all-gather of the installed sglang release, derived from the release itself.

The rehearsal (``rehearsal``) runs the register's targets on real tensors across
processes. Their call shapes changed from release to release (sources:
``/tmp/research/cp-sites.md`` §B, read from the wheels): ``total_len`` was dropped
from the ``cp_utils`` gathers in 0.5.13, zigzag lost its ``stream`` argument in
0.5.16 and gained ``per_rank_logical_token``, interleave gained ``gather_index``
and an equal-shard fast path in 0.5.21, the round-robin switch moved from
``nsa.utils`` to ``dsa.utils``. Nothing here assumes a release number: each
recipe reads the function's own signature, the names its source reads and the
fields of the release's metadata dataclass, and builds one ``Call`` per branch
of the function (padded and unpadded ranks, round-robin and in-sequence
reranges, logical and physical shard lengths, a gather index, the empty batch,
the context zigzag opens only for CUDA tensors).

Every call has the true answer next to it: each rank's input is cut from one
full tensor by the layout the function undoes, so the gathered result must be
that full tensor, bit for bit.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import random
import re
import textwrap
from dataclasses import dataclass, field, fields, is_dataclass
from types import MappingProxyType, SimpleNamespace
from typing import Any, Callable, Dict, Iterator, List


#: What is passed where some releases (0.5.6-0.5.9) assert that a stream is given; the CPU path never uses it.
NO_STREAM = "CPU rehearsal: no CUDA streams"

DTYPES = ("float32", "bfloat16", "float16")


class NoRecipe(Exception):
    """A target of the register that the rehearsal does not know how to call (a new kind of gather)."""


@dataclass
class Call:
    """One call of one target on one rank, with the answer it must give."""

    target: str
    branch: str
    cp: int
    lengths: List[int]  # rows each rank hands in (its share)
    dtype: str
    invoke: Callable[[Any], Any]  # the function object of a configuration -> its result
    expected: Any
    gathers: int = 1  # all-gathers the call makes (0 for the empty batch's early return)
    switches: Dict[str, bool] = field(default_factory=dict)  # predicate name -> value, set around the call
    key: str = ""  # identifies the same call on every rank and in every configuration
    plain_cpu: bool = False  # a path the release runs without its context on CPU tensors (zigzag: `if x.is_cuda`)


@dataclass(frozen=True)
class TargetFunction:
    """Where a register target's function lives in the installed release."""

    name: str  # the register's name (cp_utils.reorganized, cp.zigzag, ...)
    module: Any
    owner: Any  # the module or the class holding the attribute
    attribute: str

    def current(self) -> Any:
        value = self.owner.__dict__.get(self.attribute) if isinstance(self.owner, type) else getattr(
            self.owner, self.attribute)
        return value


def locate(target, module) -> TargetFunction:
    owner: Any = module
    parts = target.function.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    if not hasattr(owner, parts[-1]):
        raise AttributeError(f"{target.dotted} is not in this release")
    return TargetFunction(target.name, module, owner, parts[-1])


# -- what the source says ------------------------------------------------------------------


def _source_tree(fn) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]


def parameters(fn) -> List[str]:
    return list(inspect.signature(fn).parameters)


def metadata_attribute(fn) -> str:
    """The ``forward_batch`` attribute the function reads its CP metadata from."""
    text = inspect.getsource(fn)
    found = set(re.findall(r"forward_batch\.(\w+_metadata)\b", text))
    found |= set(re.findall(r"getattr\(\s*forward_batch\s*,\s*[\"'](\w+_metadata)[\"']", text))
    if len(found) != 1:
        raise NoRecipe(f"{fn.__qualname__} reads metadata from {sorted(found) or 'nothing'}; expected one attribute")
    return found.pop()


def metadata_class(module) -> type:
    """The release's CP metadata dataclass defined in ``module`` (the one with per-rank token counts)."""
    found = {v for v in vars(module).values()
             if isinstance(v, type) and is_dataclass(v) and v.__module__ == module.__name__
             and v.__name__.endswith("ContextParallelMetadata")
             and "per_rank_actual_token" in {f.name for f in fields(v)}}  # a set: 0.5.16+ alias it
    if len(found) != 1:
        raise NoRecipe(f"{module.__name__} defines {len(found)} CP metadata dataclasses; expected one")
    return found.pop()


def build_metadata(cls: type, **values) -> Any:
    """An instance of the release's dataclass with the fields it has; a field it lacks must not be needed."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known and v is not None})


def round_robin_switches(fn, module) -> Dict[str, List[Any]]:
    """{predicate name: [modules to set it on]} for the round-robin switch the function consults.

    0.5.8-0.5.10 read it as a module global; 0.5.11+ import it inside the function
    from ``nsa.utils`` / ``dsa.utils``, resolved at call time from that module.
    """
    tree = _source_tree(fn)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id.endswith("_round_robin_split")}
    switches: Dict[str, List[Any]] = {}
    for name in names:
        homes = [importlib.import_module(node.module) for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and any(a.name == name for a in node.names)]
        if name in vars(module):
            homes.append(module)
        if not homes:
            raise NoRecipe(f"{fn.__qualname__} reads {name} from nowhere the rehearsal can set it")
        switches[name] = homes
    return switches


@contextlib.contextmanager
def switched(homes: Dict[str, List[Any]], values: Dict[str, bool]) -> Iterator[None]:
    saved = []
    for name, value in values.items():
        for home in homes.get(name, []):
            saved.append((home, name, home.__dict__[name]))
            setattr(home, name, (lambda v=value: (lambda *a, **k: v))())
    try:
        yield
    finally:
        for home, name, old in reversed(saved):
            setattr(home, name, old)


# -- tensors ---------------------------------------------------------------------------------


def full_tensor(seed: int, rows: int, rest, dtype: str):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn((rows, *rest), generator=gen, dtype=torch.float32).to(getattr(torch, dtype))


def contiguous_shares(full, lengths: List[int]) -> List[Any]:
    """Rank r's share: the r-th contiguous slice (the layout the reorganized gathers undo)."""
    out, start = [], 0
    for n in lengths:
        out.append(full[start:start + n].clone())
        start += n
    return out


def padded(x, rows: int, seed: int):
    """``x`` with trailing rows of noise up to ``rows`` (a physical shard longer than its logical tokens)."""
    import torch

    if x.shape[0] >= rows:
        return x
    noise = full_tensor(seed, rows - x.shape[0], tuple(x.shape[1:]), str(x.dtype).split(".")[-1])
    return torch.cat([x, noise]).contiguous()


def uneven_lengths(rng: random.Random, total: int, cp: int) -> List[int]:
    """Per-rank token counts summing to ``total``, each at most ceil(total / cp), at least one short when
    ``total`` is not a multiple of ``cp``."""
    max_len = (total + cp - 1) // cp
    lengths = [max_len] * cp
    excess = max_len * cp - total
    while excess:
        r = rng.randrange(cp)
        if lengths[r] > 0:
            lengths[r] -= 1
            excess -= 1
    return lengths


def cuda_looking_class() -> type:
    """zigzag (0.5.14+) opens its symmetric context only ``if x.is_cuda`` (zigzag.py 0.5.17:457-461). On CPU a
    tensor subclass that reports ``is_cuda`` lets the rehearsal see that context; every op still runs on CPU.
    Made once per ``Plan`` (torch imported only here), so that the calls of one CP size share one class."""
    import torch

    class CudaLooking(torch.Tensor):
        @property
        def is_cuda(self):  # noqa: D401 - mirrors torch.Tensor.is_cuda
            return True

    return CudaLooking


def plain(t):
    import torch

    return t.as_subclass(torch.Tensor) if type(t) is not torch.Tensor else t


# -- the recipes -------------------------------------------------------------------------------


@dataclass
class Plan:
    """What every recipe needs: this rank, the CP size, a case counter shared by all ranks."""

    rank: int
    cp: int
    seed: int
    rng: random.Random
    counter: int = 0
    cuda_looking: type = field(default_factory=cuda_looking_class)  # tensors that answer ``is_cuda`` with True

    def next_seed(self) -> int:
        self.counter += 1
        return self.seed * 100003 + self.cp * 1009 + self.counter

    def dtype(self) -> str:
        return DTYPES[self.counter % len(DTYPES)]


def _reorganized(tf: TargetFunction, plan: Plan) -> List[Call]:
    """``cp_attn_tp_all_gather_reorganazied_into_tensor`` (nsa, 0.5.6-0.5.10), ``cp_all_gather_reorganized_into_tensor``
    and ``..._kv_cache`` (cp_utils, 0.5.10-0.5.19): contiguous shares, padded to the longest, gathered, unpadded."""
    fn = tf.current()
    params = parameters(fn)
    five = "total_len" in params  # dropped in 0.5.13
    attr = metadata_attribute(fn)
    meta_cls = metadata_class(tf.module)
    kv = tf.attribute.endswith("_kv_cache")
    cp, calls = plan.cp, []
    for branch in ("uneven shares (short ranks padded)", "equal shares (no rank pads)"):
        seed = plan.next_seed()
        total = plan.rng.randint(2 * cp, 48 * cp + 7) if branch.startswith("uneven") else cp * plan.rng.randint(2, 40)
        if branch.startswith("uneven") and total % cp == 0:
            total += 1
        lengths = uneven_lengths(plan.rng, total, cp)
        rest = (plan.rng.choice([1, 2, 4]), plan.rng.choice([8, 24])) if kv else (plan.rng.choice([1, 3, 16]),)
        dtype = plan.dtype()
        full = full_tensor(seed, total, rest, dtype)
        local = contiguous_shares(full, lengths)[plan.rank]
        max_len = (total + cp - 1) // cp
        fb = SimpleNamespace(**{attr: build_metadata(meta_cls, max_rank_len=[max_len] * cp,
                                                      per_rank_actual_token=lengths, total_seq_lens=total)})
        args = (local, total, cp, fb, NO_STREAM) if five else (local, cp, fb, NO_STREAM)
        calls.append(Call(tf.name, branch, cp, lengths, dtype, lambda f, a=args: f(*a), full))
    return calls


def _zigzag_blocks(rng: random.Random, total: int, cp: int):
    """In-sequence split: 2*cp blocks, rank r holds blocks r and 2*cp-1-r (cp_utils docstring, 0.5.17:289-301)."""
    base, extra = divmod(total, 2 * cp)
    sizes = [base + (1 if i < extra else 0) for i in range(2 * cp)]
    order = [b for r in range(cp) for b in (r, 2 * cp - 1 - r)]
    reverse_split_len = [sizes[b] for b in order]
    cp_reverse_index = [order.index(b) for b in range(2 * cp)]
    return sizes, order, reverse_split_len, cp_reverse_index


def _rerange(tf: TargetFunction, plan: Plan) -> List[Call]:
    """``cp_all_gather_rerange_output`` (nsa 0.5.8-0.5.10, cp_utils 0.5.11-0.5.19): the round-robin branch
    (its own gather and a view/transpose) and the in-sequence branch (the reorganized gather, then a rerange)."""
    import torch

    fn = tf.current()
    attr = metadata_attribute(fn)
    meta_cls = metadata_class(tf.module)
    homes = round_robin_switches(fn, tf.module)
    if len(homes) != 1:
        raise NoRecipe(f"{fn.__qualname__} consults {sorted(homes)}; expected one round-robin switch")
    (switch,) = homes
    cp, calls = plan.cp, []
    # round-robin: token i on rank i % cp, every rank the same count (the caller pads)
    seed, dtype = plan.next_seed(), plan.dtype()
    total = cp * plan.rng.randint(2, 40)
    full = full_tensor(seed, total, (plan.rng.choice([1, 3, 16]),), dtype)
    local = full[plan.rank::cp].contiguous()
    fb = SimpleNamespace(**{attr: build_metadata(meta_cls, per_rank_actual_token=[total // cp] * cp,
                                                  max_rank_len=[total // cp] * cp, total_seq_lens=total)})
    calls.append(Call(tf.name, "round-robin split (equal shares: its gather needs them)", cp, [total // cp] * cp, dtype,
                      lambda f, a=(local, cp, fb, NO_STREAM): f(*a), full, switches={switch: True}))
    # in-sequence split: blocks r and 2cp-1-r on rank r; 1..cp-1 tokens beyond a multiple of 2cp make the shares uneven
    seed, dtype = plan.next_seed(), plan.dtype()
    total = 2 * cp * plan.rng.randint(1, 24) + plan.rng.randint(1, cp - 1)
    sizes, order, reverse_split_len, cp_reverse_index = _zigzag_blocks(plan.rng, total, cp)
    full = full_tensor(seed, total, (plan.rng.choice([1, 3, 16]),), dtype)
    blocks = contiguous_shares(full, sizes)
    shares = [torch.cat([blocks[r], blocks[2 * cp - 1 - r]]) for r in range(cp)]
    lengths = [s.shape[0] for s in shares]
    max_len = (total + cp - 1) // cp
    assert max(lengths) <= max_len, (lengths, max_len)
    fb = SimpleNamespace(**{attr: build_metadata(meta_cls, max_rank_len=[max_len] * cp, per_rank_actual_token=lengths,
                                                  total_seq_lens=total, reverse_split_len=reverse_split_len,
                                                  cp_reverse_index=cp_reverse_index)})
    calls.append(Call(tf.name, "in-sequence split (zigzag blocks)", cp, lengths, dtype,
                      lambda f, a=(shares[plan.rank], cp, fb, NO_STREAM): f(*a), full, switches={switch: False}))
    return calls


def _zigzag(tf: TargetFunction, plan: Plan) -> List[Call]:
    """``ZigzagCPStrategy._all_gather_reorganized`` (0.5.14+): rank-order shares padded to the longest;
    from 0.5.16 the logical lengths may be shorter than the physical rows."""
    fn = tf.current()
    params = parameters(fn)
    with_stream = "stream" in params  # dropped in 0.5.16
    meta_cls = metadata_class(tf.module)
    has_logical = "per_rank_logical_token" in {f.name for f in fields(meta_cls)}
    strategy = getattr(tf.module, "ZigzagCPStrategy")(plan.cp)
    cp, calls = plan.cp, []
    branches = [("uneven shares, CPU tensor (no context on CPU, by design)", False, False),
                ("uneven shares, is_cuda (as on a GPU)", True, False),
                ("equal shares, is_cuda", True, False)]
    if has_logical:
        branches.append(("logical tokens shorter than the rows, is_cuda", True, True))
    for branch, cuda, logical in branches:
        seed, dtype = plan.next_seed(), plan.dtype()
        total = cp * plan.rng.randint(2, 30) if branch.startswith("equal") else plan.rng.randint(2 * cp, 48 * cp + 7)
        if not branch.startswith("equal") and total % cp == 0:
            total += 1
        lengths = uneven_lengths(plan.rng, total, cp)
        full = full_tensor(seed, total, (plan.rng.choice([2, 8]), plan.rng.choice([4, 16])), dtype)
        local = contiguous_shares(full, lengths)[plan.rank]
        longest = max(lengths)
        if logical:
            local = padded(local, longest, seed + 7)
            meta = build_metadata(meta_cls, per_rank_actual_token=[longest] * cp, per_rank_logical_token=lengths,
                                  max_rank_len=[longest] * cp)
        else:
            meta = build_metadata(meta_cls, per_rank_actual_token=lengths, max_rank_len=[longest] * cp)
        x = local.as_subclass(plan.cuda_looking) if cuda else local
        fb = SimpleNamespace(attn_cp_metadata=meta)
        args = (strategy, x, fb, NO_STREAM) if with_stream else (strategy, x, fb)
        calls.append(Call(tf.name, branch, cp, lengths, dtype, lambda f, a=args: plain(f(*a)), full, plain_cpu=not cuda))
    return calls


def _interleave(tf: TargetFunction, plan: Plan) -> List[Call]:
    """``InterleaveCPStrategy._gather_interleaved_tensor`` (0.5.17+): token i on rank i % cp, shares padded to the
    longest, gathered, put back in token order (an index, or from 0.5.21 a view when shares are equal)."""
    import torch

    meta_cls = metadata_class(tf.module)
    names = {f.name for f in fields(meta_cls)}
    strategy = getattr(tf.module, "InterleaveCPStrategy")(plan.cp)
    cp, calls = plan.cp, []
    branches = ["uneven shares", "equal shares", "logical tokens shorter than the rows", "empty batch"]
    if "gather_index" in names:
        branches.append("gather index given")
    for branch in branches:
        seed, dtype = plan.next_seed(), plan.dtype()
        if branch == "empty batch":
            total = 0
        elif branch == "equal shares":
            total = cp * plan.rng.randint(2, 30)
        else:
            total = plan.rng.randint(2 * cp, 48 * cp + 7)
            total += 1 if total % cp == 0 else 0
        rest = (plan.rng.choice([1, 16]),) if plan.counter % 2 else (2, plan.rng.choice([4, 8]))
        full = full_tensor(seed, total, rest, dtype)
        counts = [len(range(r, total, cp)) for r in range(cp)]
        longest = max(counts)
        local = full[plan.rank::cp].contiguous()
        values: Dict[str, Any] = dict(total_seq_lens=total, per_rank_actual_token=counts, max_rank_len=[longest] * cp)
        if branch.startswith("logical"):
            local = padded(local, longest, seed + 7)
            values.update(per_rank_actual_token=[longest] * cp, per_rank_logical_token=counts)
        if branch == "gather index given":
            i = torch.arange(total)
            values["gather_index"] = (i % cp) * longest + i // cp
        meta = build_metadata(meta_cls, **values)
        fb = SimpleNamespace(attn_cp_metadata=meta)
        calls.append(Call(tf.name, branch, cp, counts, dtype, lambda f, a=(strategy, local, fb): f(*a), full,
                          gathers=0 if total == 0 else 1))
    return calls


def _interleave_gather(tf: TargetFunction, plan: Plan) -> List[Call]:
    """``attn_cp_interleave_gather`` (0.5.22+): equal padded shards gathered in rank order."""
    seed, dtype = plan.next_seed(), plan.dtype()
    rows = plan.rng.randint(1, 40)
    full = full_tensor(seed, rows * plan.cp, (plan.rng.choice([1, 16]),), dtype)
    local = full[plan.rank * rows:(plan.rank + 1) * rows].contiguous()
    return [Call(tf.name, "equal shards, rank order", plan.cp, [rows] * plan.cp, dtype,
                 lambda f, a=(local,): f(*a), full)]


RECIPES: "MappingProxyType[str, Callable[[TargetFunction, Plan], List[Call]]]" = MappingProxyType({
    "cp_attn_tp_all_gather_reorganazied_into_tensor": _reorganized,
    "cp_all_gather_reorganized_into_tensor": _reorganized,
    "cp_all_gather_reorganized_into_tensor_kv_cache": _reorganized,
    "cp_all_gather_rerange_output": _rerange,
    "ZigzagCPStrategy._all_gather_reorganized": _zigzag,
    "InterleaveCPStrategy._gather_interleaved_tensor": _interleave,
    "attn_cp_interleave_gather": _interleave_gather,
})


def recipe_for(target) -> Callable[[TargetFunction, Plan], List[Call]]:
    try:
        return RECIPES[target.function]
    except KeyError:
        raise NoRecipe(f"the rehearsal has no recipe for {target.name} ({target.dotted}); add one to "
                       f"sglang_cp_symm/tools/gather_calls.py") from None


def calls_for(functions: List[TargetFunction], targets: Dict[str, Any], rank: int, cp: int, seed: int,
              rounds: int = 1) -> List[Call]:
    """Every call for CP size ``cp``: each target, each branch, ``rounds`` times, the same on every rank."""
    plan = Plan(rank=rank, cp=cp, seed=seed, rng=random.Random(seed * 31 + cp))
    calls: List[Call] = []
    for _ in range(rounds):
        for tf in functions:
            calls.extend(recipe_for(targets[tf.name])(tf, plan))
    for index, call in enumerate(calls):
        call.key = f"cp{cp}#{index}"
    return calls
