"""Stage D: NCCL's symmetric kernel on sglang's real CP all-gathers, across real ranks, in one command.

``ci/stage-d.sh`` starts ``torchrun --nproc-per-node N -m bench.stage_d worker`` (GPU) and prints one
table per release, N, CP size and NCCL (``table``). The pieces: ``releases`` (the release's real gather
functions and sglang's own groups), ``modes`` (the five configurations compared), ``sweep`` (shapes,
lengths, sizes), ``observe`` (where the buffers were), ``deadline`` (every step under a deadline),
``nccl_log`` and ``trace`` (which kernel NCCL ran), ``gpu`` (one-rank communicators, timing), ``worker``
(one rank), ``table`` and ``cli``. ``docs/stage-d.md`` is the manual.
"""
