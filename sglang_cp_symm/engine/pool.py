"""A symmetric pool of the attention-CP group's own, for allocators that register at creation.

(Before 0.5.9 the CP all-gathers run on the attention-TP group; "the CP group" below means
whichever group the release's CP all-gathers use, see ``PoolFix.group_getter``.)

Up to sglang 0.5.11 the pool's allocator (``nccl_alloc_plug``) calls
``ncclCommWindowRegister`` once, when ``ncclMemAlloc`` creates a segment, with the
communicator whose context is open at that moment. The 4 GiB pre-allocation is
created under the TP group, so a CP buffer later carved from it lies in the pool
but is registered with the TP communicator only: no error, and no symmetric
kernel for the CP all-gather (sglang PR #21392 describes this and fixes it in
0.5.12).

The fix here changes nothing in the allocator: contexts opened for the
attention-CP group (when it is not the TP group itself) allocate from a second
``torch.cuda.MemPool`` built on sglang's own compiled allocator. Every segment of
that pool is created inside a CP context, so ``nccl_alloc_plug`` registers it with
the CP communicator. All CP ranks allocate the same sizes in the same order (the
register only moves rank-uniform allocations), so the collective registration
stays in step.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


def gather_group(getter: str) -> Optional[Any]:
    """The group the CP all-gathers run on: ``get_attention_cp_group`` (0.5.9+) or, before attention CP
    had a group of its own, ``get_attention_tp_group`` (0.5.6-0.5.8), both in ``dp_attention``."""
    try:
        import importlib

        return getattr(importlib.import_module("sglang.srt.layers.dp_attention"), getter)()
    except Exception:  # not initialised (no CP), or a release without it
        return None


def tp_group() -> Optional[Any]:
    try:
        from sglang.srt.distributed.parallel_state import get_tp_group

        return get_tp_group()
    except Exception:
        return None


def needs_own_pool(group: Any, getter: str = "get_attention_cp_group") -> bool:
    """True for the group the CP all-gathers run on, when it is a group of its own (not the TP group object)."""
    cp = gather_group(getter)
    return cp is not None and group is cp and group is not tp_group()


def pool_for(group: Any, allocator: Any, pools: Dict[int, Any]) -> Any:
    """The CP group's pool in ``pools`` (keyed by the group's id), created on first use from sglang's own
    pluggable allocator."""
    import torch

    key = id(group)
    pool = pools.get(key)
    if pool is None:
        pool = torch.cuda.MemPool(allocator)
        pools[key] = pool
    return pool


#: How a release's ``SymmetricMemoryContext`` names its pool (read from ``__init__``'s code at patch time).
POOL_ID_SHAPE = "_pool_id"  # 0.5.11: self._pool_id = get_nccl_mem_pool().id
MEM_POOL_CTX_SHAPE = "_mem_pool_ctx"  # 0.5.9-0.5.10: self._mem_pool_ctx = torch.cuda.use_mem_pool(get_nccl_mem_pool())


def context_shape(context_class: Any) -> Optional[str]:
    names = getattr(getattr(context_class, "__init__", None), "__code__", None)
    names = names.co_names if names is not None else ()
    for shape in (POOL_ID_SHAPE, MEM_POOL_CTX_SHAPE):
        if shape in names:
            return shape
    return None


class GroupPoolRouter:
    """Points each freshly built ``SymmetricMemoryContext`` of the CP group at that group's pool.

    One per process where the fix is on (the patcher makes it, the plugin's ``ContextTable``
    holds it). Every context opened in the register's modules passes through it
    (``context_hooks``: the CP all-gathers' contexts, at every layer of every forward), so
    the question "is this context's group the CP group with a pool of its own?" is
    answered by ``needs_own_pool`` once per group object and then read back by the
    group's ``id`` (one dict lookup and an identity check). Asking it anew costs two
    module lookups and two calls per context (2.4 us on the CPU machine, a stand-in
    context; about 2 us on the H100, docs/watchdog-cost.md).

    Where the fix applies: the contexts of the CP group that the register's modules open,
    which on 0.5.9-0.5.11 are every context of that group sglang opens (its call sites
    name ``get_attention_cp_group()`` only in those modules). A context of the CP group
    opened elsewhere would keep sglang's shared pool: sglang's own behaviour, never a
    registration out of step (``tests/engine/test_cp_openers.py`` reads every release's
    call sites). On 0.5.6-0.5.8 the CP gathers run on the attention-TP group; its other
    contexts (the attention-TP all-reduces, outside the register's modules) keep the
    shared pool, as without the plugin.

    An answer is kept only once the CP group exists (its getter returns a group): before
    that no context of it can be built, and every group's answer is "no". The groups
    are sglang's process-wide objects, built once at start-up the same way on every rank,
    so every rank keeps the same answers.
    """

    __slots__ = ("allocator_module", "shape", "getter", "pools", "_answers", "_pool_ids", "reenters")

    def __init__(self, allocator_module: Any, shape: str, getter: str = "get_attention_cp_group",
                 pools: Optional[Dict[int, Any]] = None) -> None:
        self.allocator_module, self.shape, self.getter = allocator_module, shape, getter
        #: id(group) -> its pool: the plugin object's, shared by every router it makes and read by the watchdog
        self.pools: Dict[int, Any] = {} if pools is None else pools
        self._answers: Dict[int, tuple] = {}  # id(group) -> (group, needs its own pool): the group kept alive
        self._pool_ids: Dict[int, Any] = {}  # id(group) -> its pool's ``MemPool.id`` (0.5.11's shape), read once
        #: 0.5.9-0.5.10 rebuild the pool context on re-entry: a routed context must come back to the CP pool then
        self.reenters = shape == MEM_POOL_CTX_SHAPE

    def needs_own_pool(self, group: Any) -> bool:
        known = self._answers.get(id(group))
        if known is not None and known[0] is group:
            return known[1]
        own = needs_own_pool(group, self.getter)
        if gather_group(self.getter) is not None:
            self._answers[id(group)] = (group, own)
        return own

    def route(self, context: Any) -> bool:
        """Re-point ``context`` if it belongs to the CP group; True when it was.

        The context's own ``__enter__`` still sets ``SGLANG_TMP_NCCL_COMM_VALUE`` to the CP
        communicator, which is the communicator ``nccl_alloc_plug`` registers new segments with.
        """
        group = getattr(context, "group_coordinator", None)
        if group is None or not self.needs_own_pool(group):
            return False
        if self.shape == POOL_ID_SHAPE:
            known = self._pool_ids.get(id(group))
            if known is None:
                allocator = getattr(self.allocator_module, "_allocator", None)
                if allocator is None:
                    return False
                known = self._pool_ids[id(group)] = pool_for(group, allocator, self.pools).id  # one C++ call, once
            context._pool_id = known
            return True
        allocator = getattr(self.allocator_module, "_allocator", None)
        if allocator is None:
            return False
        own = pool_for(group, allocator, self.pools)
        import torch

        context._mem_pool_ctx = torch.cuda.use_mem_pool(own)
        context._cp_symm_pool = own  # re-entry (after disable/restore) must come back here too
        return True


def reenter_group_pool(context: Any) -> None:
    """Before a 0.5.9-0.5.10 context is entered again: rebuild its one-shot pool context on the CP pool.

    Those releases rebuild ``_mem_pool_ctx`` from the shared pool on re-entry
    (``if self.exited``); doing it first, on the CP pool, keeps the group's buffers in
    its own pool across ``disable_/restore_symmetric_memory_context``.
    """
    own = getattr(context, "_cp_symm_pool", None)
    if own is not None and getattr(context, "exited", False):
        import torch

        context._mem_pool_ctx = torch.cuda.use_mem_pool(own)
        context.exited = False


def pool_stats(pool: Any) -> dict:
    """Segments and bytes of a ``torch.cuda.MemPool``, read from its snapshot (no allocation, no collective)."""
    segments = pool.snapshot()
    return {
        "segments": len(segments),
        "reserved_bytes": sum(s["total_size"] for s in segments),
        "allocated_bytes": sum(s["allocated_size"] for s in segments),
    }
