"""Stage C (one GPU): the patched output lands in sglang's real symmetric pool, in a segment of the CP group.

Runs ``gpu_pool_probe.py`` (see its docstring for the single gate it lifts) in
fresh processes on sglang 0.5.11, where both defects exist:
- unpatched: the KV all-gather's output is in no symmetric pool;
- output patch alone (what a bare backport of PR #24040 gives): the output is in
  the shared pool, carved from the segment the TP pre-allocation created, so
  registered with the TP communicator only;
- the plugin: the output is in the CP group's own pool, whose only segment was
  created while sglang's context had set the CP communicator;
- the plugin with send staging: the all-gather's input is in that pool too, and
  201 calls leave the pool's reserved bytes as one call did (no leak);
- the race guard on the machine's own NCCL (2.28.9 with the image's torch 2.11): no CP buffer
  from the pool, upstream's own included.
Skipped where no CUDA GPU exists. Needs sglang importable (on the device machine:
the carried wheels, see docs/gpu-runs.md), not the CPU release environments.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU on this machine (stage C runs on a GPU host)", allow_module_level=True)

PROBE = Path(__file__).with_name("gpu_pool_probe.py")


def probe(mode: str) -> dict:
    result = subprocess.run([sys.executable, str(PROBE), mode], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_unpatched_output_is_outside_every_pool():
    r = probe("unpatched")
    assert r["correct"] and not r["output_in_shared_pool"] and not r["output_in_cp_pool"]
    assert r["upstream_output_in_a_pool"]  # upstream's own registered gather is in the pool


def test_on_the_machines_racy_nccl_the_guard_keeps_every_cp_buffer_out_of_the_pool():
    """Issue 16 on the real pool: on NCCL 2.28.0-2.30.6 and sm90+ (the device: torch 2.11's 2.28.9 on an H200),
    neither the plugin's target nor upstream's own registered gather allocates from the pool; with the race
    allowance (the send mode) upstream's is back in it."""
    r = probe("guard")
    if not (r["race_guard"] or {}).get("engaged"):
        pytest.skip(f"NCCL {r['nccl']} on this GPU carries no race: the guard does not engage ({r['race_guard']})")
    assert r["correct"] and r["outcome"].startswith("guarded: "), r
    assert not r["output_in_shared_pool"] and not r["output_in_cp_pool"] and not r["upstream_output_in_a_pool"], r
    assert r["shared_pool_segments"] == r["shared_segments_after_prealloc"]  # nothing of CP grew the pool
    allowed = probe("send")
    assert allowed["upstream_output_in_a_pool"] and not (allowed["race_guard"] or {}).get("engaged"), allowed


def test_output_patch_alone_lands_in_the_tp_created_segment():
    r = probe("shared-pool")
    assert r["correct"] and r["output_in_shared_pool"] and not r["output_in_cp_pool"]
    assert r["shared_pool_segments"] == r["shared_segments_after_prealloc"] == 1  # carved from the TP segment


def test_plugin_output_lands_in_a_segment_created_under_the_cp_communicator():
    r = probe("plugin")
    assert r["correct"] and r["output_in_cp_pool"] and not r["output_in_shared_pool"]
    assert r["cp_pool_segments"] >= 1 and r["comm_when_gathering_is_cp"]
    assert r["shared_pool_segments"] == r["shared_segments_after_prealloc"]  # the TP pool did not grow


def test_send_mode_stages_the_input_in_the_cp_pool_without_leaking():
    r = probe("send")
    assert r["correct"] and r["output_in_cp_pool"] and r["input_in_cp_pool"]
    assert not r["input_in_shared_pool"] and r["comm_when_gathering_is_cp"]
    assert r["cp_pool_reserved_after_201_calls"] == r["cp_pool_reserved_after_1_call"] > 0
    assert r["cp_pool_allocated_after_201_calls"] == 0  # every staged and output buffer was returned
