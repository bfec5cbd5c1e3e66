"""Stage B, table-driven: the warm-up's longest forward is exactly the largest forward the release's own scheduler
would run for one request, on every release environment there is (ci/releases.txt), chunked prefill off among the
cases.

Real here, per release: ``ServerArgs`` resolved as the server resolves them (chunk per DP rank under DP attention,
page size, attention CP in the release's own flags, ``--max-total-tokens`` as the KV pool), ``ModelConfig`` (the
context length) and ``GenerateReqInput``; the plugin's figure from ``warmup.plan_for``; the scheduler's from
``validate_input_length`` and ``PrefillAdder`` (``add_one_req``, then ``add_chunked_req`` per chunk) over the real KV
allocator and a disabled tree cache (``warmup_rehearsal.ReleaseScheduler``): the largest forward of the longest prompt
the rank both accepts and admits, found by bisection. Stood in: only what the CPU cannot import,
``sgl_kernel`` (tests/stubs/cuda_only, whose names raise if called; 0.5.8-0.5.10 import it at module level from the
scheduling modules). The KV pool of a rank, which a server's memory profile sets, is ``--max-total-tokens`` or
``warmup_rehearsal.PROFILED_POOL_TOKENS``; ``max_req_input_len`` follows from it as ``tp_worker.py`` computes it.
Releases without an environment here: tests/tools/test_patches_and_sweep.py reads their wheels.
"""

import json
from pathlib import Path

import pytest

from conftest import PROOF_RELEASES as RELEASES, ROOT, last_line, run_python

pytestmark = pytest.mark.release

HERE = Path(__file__).resolve().parent
CUDA_ONLY = str(ROOT / "tests" / "stubs" / "cuda_only")

#: (name, server arguments besides TP 4 and attention CP 2). The model's context is 40960 tokens.
CASES = [
    ("chunk 8192", dict(chunked_prefill_size=8192)),
    ("chunk 8192, pages of 64", dict(chunked_prefill_size=8192, page_size=64)),
    ("chunk 16384 above max_prefill_tokens 4096", dict(chunked_prefill_size=16384, max_prefill_tokens=4096)),
    ("chunk 8192 under DP attention 2", dict(chunked_prefill_size=8192, dp_size=2, enable_dp_attention=True)),
    ("chunk 8192, pool 6000 shorter than the chunk", dict(chunked_prefill_size=8192, max_total_tokens=6000)),
    ("chunking off", dict(chunked_prefill_size=-1)),
    ("chunking off, context 16384", dict(chunked_prefill_size=-1, context_length=16384)),
    ("chunking off, max_prefill_tokens 4096", dict(chunked_prefill_size=-1, max_prefill_tokens=4096)),
    ("chunking off under DP attention 2", dict(chunked_prefill_size=-1, dp_size=2, enable_dp_attention=True)),
    ("chunking off, pages of 64, pool = context", dict(chunked_prefill_size=-1, page_size=64, max_total_tokens=40960)),
    ("chunking off, pages of 64, pool 30000", dict(chunked_prefill_size=-1, page_size=64, max_total_tokens=30000)),
    ("chunking off, pages of 16, pool 20000", dict(chunked_prefill_size=-1, page_size=16, max_total_tokens=20000)),
]

PROBE = """
import warnings
warnings.filterwarnings("ignore")
import warmup_harness as h
from sglang.srt.managers.io_struct import GenerateReqInput
from sglang_cp_symm.engine.warmup import plan_for, resolved_arg
out = []
for name, extra in CASES:
    args = h.cp_server_args(**extra)
    tm = h.RecordingTokenizerManager(args)
    plan = plan_for(tm, GenerateReqInput, pool_tokens=tm.pool_tokens, pool_source="reported")
    blind = plan_for(tm, GenerateReqInput)  # the pool not reported: inferred from max_req_input_len
    scheduler = h.ReleaseScheduler(args, tm.pool_tokens, tm.max_req_input_len)
    mine, theirs = scheduler.schedule(plan.prompts[0]), scheduler.schedule(blind.prompts[0])
    out.append({"name": name, "chunk": resolved_arg(tm.server_args, "chunked_prefill_size"),
                "page": scheduler.page, "pool": tm.pool_tokens, "max_req_input_len": tm.max_req_input_len,
                "plan_forward": plan.forward.tokens, "plan_prompt": plan.prompts[0], "source": plan.forward.source,
                "plan_admitted": mine.admitted, "plan_extends": mine.extends[:3], "plan_largest": mine.largest,
                "scheduler_longest_prompt": scheduler.longest_admitted(),
                "scheduler_largest": scheduler.largest_forward(),
                "blind_forward": blind.forward.tokens, "blind_admitted": theirs.admitted,
                "blind_largest": theirs.largest, "dp": plan.dp_size, "cp": plan.cp_size})
h.emit(out)
"""

_results: dict = {}


def results(release: str) -> dict:
    """All cases of one release, computed once in one fresh interpreter of that release."""
    if release not in _results:
        code = f"CASES = {CASES!r}\n{PROBE}"
        done = run_python(release, code, cwd=HERE, timeout=600, env={"PYTHONPATH_PREPEND": CUDA_ONLY}, fresh=False)
        _results[release] = {case["name"]: case for case in json.loads(last_line(done))}
    return _results[release]


@pytest.mark.parametrize("name", [name for name, _ in CASES])
@pytest.mark.parametrize("release", RELEASES)
def test_the_warmups_longest_forward_is_the_schedulers_largest(release, name):
    case = results(release)[name]
    assert case["plan_forward"] == case["scheduler_largest"], case
    assert case["plan_admitted"] and case["plan_largest"] == case["plan_forward"], case  # sent whole, no NO_TOKEN
    # without the pool reported, the warm-up never sends what the scheduler would leave in its queue
    assert case["blind_admitted"] and case["blind_forward"] <= case["scheduler_largest"], case


@pytest.mark.parametrize("release", RELEASES)
def test_the_table_covers_what_the_figure_depends_on(release):
    """The cases are what they claim: the resolved chunk per DP rank, the page, the pool, the bound that wins."""
    by = results(release)
    assert by["chunk 8192"]["scheduler_largest"] == 8192 and by["chunk 8192"]["plan_extends"] == [8192]
    assert by["chunk 16384 above max_prefill_tokens 4096"]["scheduler_largest"] == 16384  # the first request is exempt
    assert by["chunk 8192 under DP attention 2"]["chunk"] == 4096 and by["chunk 8192 under DP attention 2"]["dp"] == 2
    assert by["chunk 8192, pool 6000 shorter than the chunk"]["scheduler_largest"] == 6000 - 7
    assert by["chunking off"]["chunk"] == -1 and by["chunking off"]["scheduler_largest"] == 40960 - 7
    assert by["chunking off, context 16384"]["scheduler_largest"] == 16384 - 7
    assert by["chunking off, max_prefill_tokens 4096"]["scheduler_largest"] == 40960 - 7
    assert by["chunking off under DP attention 2"]["chunk"] == -1
    paged = by["chunking off, pages of 64, pool 30000"]
    assert paged["pool"] == 29952 and paged["page"] == 64
    if tuple(int(x) for x in release.split(".")) >= (0, 5, 11):  # one page reserved per request: the KV bound wins
        assert paged["scheduler_largest"] == 29952 - 1 - 64 - 1 < paged["max_req_input_len"] - 1
        assert by["chunking off, pages of 64, pool = context"]["scheduler_largest"] == 40960 - 1 - 64 - 1
    else:
        assert paged["scheduler_largest"] == paged["max_req_input_len"] - 1
    assert all(case["cp"] > 1 for case in by.values())
