"""Stage the CP all-gather's send buffer in the attention-CP group's symmetric pool.

NCCL 2.27-2.28 pick a symmetric AllGather kernel only when the send buffer lies in
a symmetric window too (see ``nccl_policy``), and no sglang release puts it there.
The rewritten gather calls ``cp_symm_stage_send(input, group, stream)`` in place of
its input. The staged buffer:

- is allocated only where the output itself is in the pool: the context is the same
  ``use_symmetric_memory(group, disabled=not is_allocation_symmetric())`` that guards
  the output, so both are in it or neither is;
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
    import torch
    from sglang.srt.distributed.device_communicators.pynccl_allocator import use_symmetric_memory
    from sglang.srt.layers.dp_attention import is_allocation_symmetric

    group = attention_cp_group() if group is None else group
    context = use_symmetric_memory(group, disabled=not is_allocation_symmetric())
    if isinstance(context, nullcontext):
        return tensor
    with context:
        staged = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
    staged.copy_(tensor)
    if stream is not None and staged.is_cuda and stream != torch.cuda.current_stream(staged.device):
        staged.record_stream(stream)
    return staged
