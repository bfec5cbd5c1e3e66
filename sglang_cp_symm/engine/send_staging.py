"""Stage the CP all-gather's send buffer in the attention-CP group's symmetric pool.

NCCL 2.27-2.28 pick a symmetric AllGather kernel only when the send buffer lies in
a symmetric window too (see ``nccl_policy``), and no sglang release puts it there.
The rewritten gather calls ``cp_symm_stage_send(input, group, stream)`` in place of
its input. The staged buffer:

- is allocated only where the output itself is in the pool: the context is the same
  ``use_symmetric_memory(group, disabled=not is_allocation_symmetric())`` that guards
  the output, opened by the same function the gather's module binds to that name
  (where the plugin is on, its opener there, ``context_hooks``: the staged buffer is
  routed, guarded and watched as the output is), so both are in it or neither is;
- has the input's size, which the all-gather's contract makes equal on every rank,
  so the pool grows the same way on every rank (window registration is collective);
- is filled by a copy on the current stream, before the collective is issued;
- when the collective runs on another stream, is marked used by that stream
  (``record_stream``), so the allocator does not hand its block out again before
  the collective has read it.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional


def attention_cp_group() -> Any:
    from sglang.srt.layers.dp_attention import get_attention_cp_group

    return get_attention_cp_group()


def cp_symm_stage_send(tensor: Any, group: Optional[Any] = None, stream: Optional[Any] = None) -> Any:
    """Return a copy of ``tensor`` in the symmetric pool of ``group`` (default: the attention-CP group),
    or ``tensor`` itself where symmetric memory is not in use for this allocation."""
    import sys

    import torch
    from sglang.srt.layers.dp_attention import is_allocation_symmetric

    open_context = sys._getframe(1).f_globals.get("use_symmetric_memory")  # the calling gather module's binding
    if open_context is None:
        from sglang.srt.distributed.device_communicators.pynccl_allocator import use_symmetric_memory as open_context
    group = attention_cp_group() if group is None else group
    context = open_context(group, disabled=not is_allocation_symmetric())
    if isinstance(context, nullcontext):
        return tensor
    with context:
        staged = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
    staged.copy_(tensor)
    if stream is not None and staged.is_cuda and stream != torch.cuda.current_stream(staged.device):
        staged.record_stream(stream)
    return staged
