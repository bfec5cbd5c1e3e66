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
The watchdog's signal (issue 23): the counter compiled into sglang's allocator counts exactly the growths the
pools' snapshots see in each of those sweeps (2, 1 and 0 on the H100), and it is what the watchdog read.
And with chunked prefill off (``gpu_warmup_probe.py off CONTEXT [CAP]``, context 32768 here): the plan's
figures (the longest forward, the bytes its CP buffers need, what a cap leaves) next to the pool growth measured,
the warm-up's and a sweep's up to the scheduler's largest forward.
Skipped where no CUDA GPU exists; needs sglang importable (docs/gpu-runs.md).
"""

import functools
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


OFF_CONTEXT = 32768


@functools.lru_cache(maxsize=None)  # the signal's test reads the same three sweeps as the warm-up's tests
def probe(mode: str, *args: str) -> dict:
    argv = [sys.executable, str(PROBE), mode, *(args or (str(MAX_TOKENS),))]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=dict(os.environ))
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


@pytest.mark.parametrize("mode, growths", [("none", None), ("max", 1), ("full", 0)])
def test_the_allocators_counter_counts_exactly_the_growths_the_snapshots_see(mode, growths):
    r = probe(mode)
    assert r["signal"] == "allocator counter", r["signal_note"]  # proven on its first reading, never fell back
    assert r["counter_sweep_allocations"] == r["sweep_new_segments"] == r["sweep_growths"], r
    assert r["counter_sweep_frees"] == 0
    assert r["counter_net_segments"] == r["snapshot_segments"]  # every segment of every pool, since the start
    assert r["sweep_growth_allocations"] == r["counter_sweep_allocations"]  # each growth event carries its calls
    if growths is None:
        assert r["counter_sweep_allocations"] >= 2
    else:
        assert r["counter_sweep_allocations"] == growths


def test_chunked_prefill_off_the_planned_forward_holds_the_pool_before_serving():
    r = probe("off", str(OFF_CONTEXT))
    planned, measured = r["planned"], r["measured"]
    assert r["correct"]
    assert planned["longest_forward"] == planned["scheduler_largest"] == OFF_CONTEXT - 7  # the longest accepted prompt
    assert planned["warning"] and "one forward of 32761 tokens" in planned["warning"]
    assert planned["plan_line"].startswith("sglang-cp-symm: warm-up plan: longest forward 32761 tokens")
    # the warm-up grew the pool by what the plan expected: its CP buffers in whole segments and the small one, where
    # no pre-allocation holds them (0.5.9-0.5.11 give the CP group a pool of its own)
    assert measured["warmup_growth_mib"] == planned["growth_mib"], (planned, measured)
    assert measured["warmup_growths"] == measured["warmup_new_segments"] >= 1
    assert measured["sweep_growths"] == measured["sweep_new_segments"] == 0  # nothing left for serving


def test_a_capped_warmup_leaves_what_it_said_and_the_watchdog_counts_it():
    r = probe("off", str(OFF_CONTEXT), str(OFF_CONTEXT // 4))
    planned, measured = r["planned"], r["measured"]
    assert r["correct"] and planned["capped"] and planned["longest_forward"] == OFF_CONTEXT // 4
    assert planned["warning"] is None and "capped by SGLANG_CP_SYMM_WARMUP_TOKENS" in planned["plan_line"]
    assert measured["warmup_growth_mib"] == planned["growth_mib"], (planned, measured)  # 20 MiB + the 2 MiB small one
    assert measured["sweep_growths"] == measured["sweep_new_segments"] >= 1  # the watchdog stayed on
    # a rising sweep is the worst order: it grows the pool by what the plan gave as the most
    assert planned["left_mib"] <= measured["sweep_growth_mib"] <= planned["left_most_mib"]
    assert measured["sweep_growths"] <= planned["left_most_growths"]
