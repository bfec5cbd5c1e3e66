"""Stage C (one GPU): the warm-up leaves nothing for serving to grow, and the watchdog counts every growth.

Runs ``gpu_warmup_probe.py`` (see its docstring for what one GPU cannot provide and how
it is lifted) in fresh processes: after each warm-up mode, a sweep of every length from
1 to 8192 tokens (sglang's chunk on an H100 or H200) through the patched KV-cache
all-gather, counting the symmetric pool's growths with the real watchdog and,
independently, with the pools' own snapshots.
- no warm-up: the sweep grows the pool (the small 2 MiB segment, then a large one);
- the longest prompt alone: one growth is left, the small segment, which no long
  prefill ever creates (PyTorch serves requests of at most 1 MiB from separate segments);
- the plugin's warm-up (longest prompt, then the short lengths of ``small_pool_tokens``):
  no growth at all.
Skipped where no CUDA GPU exists; needs sglang importable (docs/gpu-runs.md).
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

PROBE = Path(__file__).with_name("gpu_warmup_probe.py")
MAX_TOKENS = 8192


def probe(mode: str) -> dict:
    result = subprocess.run([sys.executable, str(PROBE), mode, str(MAX_TOKENS)], capture_output=True, text=True,
                            timeout=600, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    if os.environ.get("CP_SYMM_PROBE_LOG"):  # the figures behind the assertions, for docs/gpu-runs.md
        with open(os.environ["CP_SYMM_PROBE_LOG"], "a") as log:
            log.write(line + "\n")
    return json.loads(line)


def test_without_warmup_the_sweep_grows_the_pool_and_the_watchdog_sees_each_growth():
    r = probe("none")
    assert r["correct"]
    assert r["sweep_growths"] >= 2
    assert r["sweep_growths"] == r["sweep_new_segments"]
    assert 2.0 in r["growth_mib"]  # the small segment


def test_the_longest_prompt_alone_leaves_the_small_segment_to_serving():
    r = probe("max")
    assert r["correct"]
    assert r["sweep_growths"] == r["sweep_new_segments"] == 1
    assert r["growth_mib"] == [2.0]


def test_the_plugins_warmup_leaves_nothing_to_grow():
    r = probe("full")
    assert r["correct"] and len(r["warmup_prompts"]) >= 2
    assert r["sweep_growths"] == r["sweep_new_segments"] == 0
