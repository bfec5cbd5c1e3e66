"""The real CP all-gather functions of the installed sglang release, and how each is called.

One entry per function shape (``/tmp/research/cp-sites.md`` B1 lists them per release; line numbers
at each release there):
- ``cp_utils.cp_all_gather_reorganized_into_tensor`` / ``..._kv_cache``: ``(x, total_len, cp, fb, stream)``
  in 0.5.10-0.5.12, ``(x, cp, fb, stream)`` in 0.5.13-0.5.19; ``fb.attn_cp_metadata`` gives
  ``max_rank_len`` and ``per_rank_actual_token``; result: the ranks' rows in rank order.
- ``cp_utils.cp_all_gather_rerange_output`` (0.5.11-0.5.19), its round-robin branch, switched on by the
  predicate it imports at call time (``nsa.utils.is_nsa_prefill_cp_round_robin_split`` 0.5.11-0.5.12,
  ``dsa.utils.is_dsa_prefill_cp_round_robin_split`` 0.5.13-0.5.19); equal shards; result in token order.
- ``layers/cp/zigzag.ZigzagCPStrategy._all_gather_reorganized`` (0.5.14+; ``(self, x, fb, stream)`` in
  0.5.14-0.5.15, ``(self, x, fb)`` from 0.5.16); opens its symmetric context only for CUDA tensors.
- ``layers/cp/interleave.InterleaveCPStrategy._gather_interleaved_tensor`` (0.5.17+): rank r holds tokens
  r, r+cp, ...; result in token order.
- ``layers/cp/interleave.attn_cp_interleave_gather`` (0.5.22+): equal shards, rank order.

Each entry calls the function as the engine would at that moment (module or class attribute read at
call time), so whatever a mode installed is what runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, List, Optional

CP_UTILS = "sglang.srt.layers.utils.cp_utils"
ZIGZAG = "sglang.srt.layers.cp.zigzag"
INTERLEAVE = "sglang.srt.layers.cp.interleave"
RR_PREDICATES = (
    ("sglang.srt.layers.attention.nsa.utils", "is_nsa_prefill_cp_round_robin_split"),
    ("sglang.srt.layers.attention.dsa.utils", "is_dsa_prefill_cp_round_robin_split"),
)


@dataclass
class GatherCase:
    """One real CP all-gather function and how to drive it."""

    label: str
    target: str  # the register's target name (``sglang_cp_symm.targets``)
    kinds: tuple  # payload kinds it carries: "kv" (N-D rows), "hidden" (2-D rows)
    split: str  # "uneven" (any share <= the ceiling), "interleave" (token i on rank i % cp), "equal"
    order: str  # "rank": result = ranks' rows in rank order; "token": the original token order
    cuda_only_context: bool
    call: Callable[[Any, List[int], int, int, Any], Any]  # (x, lengths, total, cp, stream) -> result


def metadata(cls, **values):
    """A metadata dataclass with the fields a gather reads; any other required field is None."""
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                values[f.name] = None
    return cls(**values)


def positional_count(fn) -> int:
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(params)


def _import(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # absent in this release, or a stub that raises on import (0.5.20+ cp_utils)
        return None


def cp_utils_cases() -> List[GatherCase]:
    module = _import(CP_UTILS)
    if module is None or not hasattr(module, "ContextParallelMetadata"):
        return []
    cases = []
    for fn_name, target, kinds in (("cp_all_gather_reorganized_into_tensor", "cp_utils.reorganized", ("hidden",)),
                                   ("cp_all_gather_reorganized_into_tensor_kv_cache", "cp_utils.reorganized_kv_cache",
                                    ("kv",))):
        fn = getattr(module, fn_name, None)
        if fn is None:
            continue
        five = positional_count(fn) == 5

        def call(x, lengths, total, cp, stream, _name=fn_name, _five=five):
            max_len = max(lengths)
            fb = SimpleNamespace(attn_cp_metadata=metadata(module.ContextParallelMetadata, max_rank_len=[max_len] * cp,
                                                           per_rank_actual_token=list(lengths)))
            fn_now = getattr(module, _name)
            return fn_now(x, total, cp, fb, stream) if _five else fn_now(x, cp, fb, stream)

        cases.append(GatherCase(f"cp_utils.{fn_name}", target, kinds, "uneven", "rank", False, call))
    rerange = getattr(module, "cp_all_gather_rerange_output", None)
    if rerange is not None:
        names = set(rerange.__code__.co_names) | set(rerange.__code__.co_varnames)
        predicate = next(((m, n) for m, n in RR_PREDICATES if n in names), None)
        if predicate is not None:
            def call_rr(x, lengths, total, cp, stream, _pred=predicate):
                pred_module = importlib.import_module(_pred[0])
                saved = getattr(pred_module, _pred[1])
                setattr(pred_module, _pred[1], lambda: True)  # sglang's switch for the round-robin layout
                try:
                    return getattr(module, "cp_all_gather_rerange_output")(x, cp, SimpleNamespace(), stream)
                finally:
                    setattr(pred_module, _pred[1], saved)

            cases.append(GatherCase("cp_utils.cp_all_gather_rerange_output (round-robin)", "cp_utils.rerange_output",
                                    ("hidden",), "equal", "token", False, call_rr))
    return cases


def zigzag_cases() -> List[GatherCase]:
    module = _import(ZIGZAG)
    cls = getattr(module, "ZigzagCPStrategy", None) if module else None
    meta_cls = getattr(module, "ZigzagContextParallelMetadata", None) if module else None
    if cls is None or meta_cls is None or not hasattr(cls, "_all_gather_reorganized"):
        return []
    with_stream = positional_count(cls.__dict__["_all_gather_reorganized"]) == 4

    def call(x, lengths, total, cp, stream):
        meta = metadata(meta_cls, per_rank_actual_token=list(lengths), max_rank_len=[max(lengths)] * cp,
                        total_seq_lens=total)
        fb = SimpleNamespace(attn_cp_metadata=meta)
        strategy = cls(cp)
        return strategy._all_gather_reorganized(x, fb, stream) if with_stream else strategy._all_gather_reorganized(x, fb)

    return [GatherCase("cp.zigzag ZigzagCPStrategy._all_gather_reorganized", "cp.zigzag", ("kv", "hidden"), "uneven",
                       "rank", True, call)]


def interleave_cases() -> List[GatherCase]:
    module = _import(INTERLEAVE)
    if module is None:
        return []
    cases = []
    cls = getattr(module, "InterleaveCPStrategy", None)
    meta_cls = getattr(module, "InterleaveContextParallelMetadata", None)
    if cls is not None and meta_cls is not None and hasattr(cls, "_gather_interleaved_tensor"):
        def call(x, lengths, total, cp, stream):
            meta = metadata(meta_cls, total_seq_lens=total, per_rank_actual_token=list(lengths),
                            max_rank_len=[max(lengths)] * cp)
            return cls(cp)._gather_interleaved_tensor(x, SimpleNamespace(attn_cp_metadata=meta))

        cases.append(GatherCase("cp.interleave InterleaveCPStrategy._gather_interleaved_tensor", "cp.interleave",
                                ("kv", "hidden"), "interleave", "token", False, call))
    if hasattr(module, "attn_cp_interleave_gather"):
        def call_gather(x, lengths, total, cp, stream):
            return getattr(module, "attn_cp_interleave_gather")(x)

        cases.append(GatherCase("cp.interleave attn_cp_interleave_gather", "cp.interleave_gather", ("hidden",),
                                "equal", "rank", False, call_gather))
    return cases


def gather_cases() -> List[GatherCase]:
    """Every CP all-gather of the installed release that the harness drives."""
    return cp_utils_cases() + zigzag_cases() + interleave_cases()


def primary_case(cases: List[GatherCase]) -> Optional[GatherCase]:
    """The gather latency is measured on: the KV-cache gather (the one PR #24040 fixed), else the first."""
    for preferred in ("cp_utils.reorganized_kv_cache", "cp.zigzag", "cp.interleave"):
        for case in cases:
            if case.target == preferred:
                return case
    return cases[0] if cases else None


# -- the groups ----------------------------------------------------------------------------


def cp_group_ranks(world: int, cp: int) -> List[List[int]]:
    """The attention-CP groups sglang builds for tp = world, no attention DP
    (``initialize_model_parallel``, parallel_state.py 0.5.11:1862-1880: ranks ``range(i, world, attn_tp)``)."""
    attn_tp = world // cp
    return [list(range(i, world, attn_tp)) for i in range(attn_tp)]


def make_group(ps, group_ranks: List[List[int]], local_rank: int, backend: str, name: str, pynccl: bool):
    """A real ``GroupCoordinator`` through sglang's ``init_model_parallel_group``: pynccl on for NCCL (as
    the engine builds its TP and CP groups), off on CPU; custom all-reduce and the broadcaster off."""
    wanted = dict(use_pynccl=pynccl, use_custom_allreduce=False, use_message_queue_broadcaster=False,
                  group_name=name, use_mscclpp_allreduce=False, use_torch_symm_mem_allreduce=False)
    accepted = inspect.signature(ps.init_model_parallel_group).parameters
    return ps.init_model_parallel_group(group_ranks, local_rank, backend,
                                        **{k: v for k, v in wanted.items() if k in accepted})


def install_cp_group(ps, tp, cp_group, cp: int) -> str:
    """Put ``cp_group`` where the release's CP all-gathers look it up; returns how it was done.

    0.5.9-0.5.20 read ``parallel_state._ATTN_CP`` (directly, or through ``get_parallel()``'s read-through);
    0.5.21+ read the stamped ``get_parallel()`` values, which ``initialize_model_parallel`` sets with
    ``override_permanently`` (parallel_state.py 0.5.23:3001)."""
    ps._TP = tp
    ps._ATTN_CP = cp_group
    runtime = _import("sglang.srt.runtime_context")
    parallel = getattr(runtime, "get_parallel", None) if runtime else None
    if parallel is not None and hasattr(parallel(), "override_permanently"):
        context = parallel()
        context.clear_stamp()
        context.override_permanently(attn_cp_group=cp_group, attn_cp_rank=cp_group.rank_in_group, attn_cp_size=cp)
        return "parallel_state._ATTN_CP + get_parallel().override_permanently"
    return "parallel_state._ATTN_CP"
