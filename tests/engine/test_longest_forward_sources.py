"""Stage B, source level: the sglang code the warm-up's figures and its bounded waits rest on, in every published
wheel 0.5.6-0.5.23 (post releases too), environment or not.

tests/engine/test_longest_forward.py runs the scheduling code itself where a release environment exists; this reads
every wheel (ci/fetch-wheels.sh, .cache/wheels) with ``ast`` and checks, per release, each rule that
``engine/scheduler_rules.py``, ``engine/allocator_model.py`` and ``engine/warmup_fanout.py`` cite:
- the KV admission of ``PrefillAdder.add_one_req`` adds a page per request from 0.5.11 on (``+ self.page_size``,
  from 0.5.21 ``+ self.per_req_token_overhead``, which is the page unless the KV cache is sharded) and not before:
  ``scheduler_rules.PAGE_RESERVED_FROM``;
- ``max_req_input_len = max_req_len - 5`` with ``max_req_len = min(context_len - 1, pool - 1)`` (tp_worker.py), and the
  scheduler refuses ``len(origin_input_ids) >= max_req_input_len`` (``validate_input_length``);
- the first request of a batch is admitted whatever ``max_prefill_tokens`` (``len(self.can_run_list) != 0``);
- ``TokenizerManager.abort_request(rid="", abort_all=False)``, ``get_internal_state`` and the ranks'
  ``token_capacity``; the scheduler matches aborts by rid prefix;
- sglang's warm-up budget (``SGLANG_WARMUP_TIMEOUT = EnvFloat(-1)``, else 600 s, 1800 s on PD prefill), the named
  warm-ups awaited in the lifespan, and ``--watchdog-timeout``'s default of 300 s.
"""

import ast
import re

import pytest

from conftest import ROOT
from sglang_cp_symm.engine.scheduler_rules import PAGE_RESERVED_FROM
from sglang_cp_symm.engine.warmup_fanout import SGLANG_PREFILL_WARMUP_BUDGET_S, SGLANG_WARMUP_BUDGET_S, \
    SGLANG_WATCHDOG_TIMEOUT_S
from sglang_cp_symm.releases import Release

pytestmark = pytest.mark.release

WHEELS = sorted((ROOT / ".cache" / "wheels").glob("sglang-*.whl"))


def version_of(wheel) -> str:
    return re.match(r"sglang-([0-9][^-]*)-", wheel.name).group(1)


SWEPT = [w for w in WHEELS if (0, 5, 6) <= tuple(Release.parse(version_of(w))) <= (0, 5, 23)]


def reader(wheel):
    from maint.patches import wheel_reader

    read = wheel_reader(wheel)
    return lambda *paths: "\n".join(text for text in (read(f"sglang/srt/{p}") for p in paths) if text)


def method(source: str, cls: str, name: str):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name:
                    return item
    return None


def assigned(function, name: str):
    return [ast.unparse(n.value) for n in ast.walk(function) if isinstance(n, ast.Assign)
            and any(isinstance(t, (ast.Name, ast.Attribute)) and ast.unparse(t).endswith(name) for t in n.targets)]


def field_default(source: str, name: str):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return ast.literal_eval(node.value) if node.value is not None else None
    return None


@pytest.fixture(scope="module", params=SWEPT or [None], ids=[version_of(w) for w in SWEPT] or ["no-wheels"])
def release_source(request):
    if request.param is None:
        pytest.skip("no wheels in .cache/wheels: run ci/fetch-wheels.sh")
    return Release.parse(version_of(request.param)), reader(request.param)


def test_the_kv_admission_reserves_a_page_from_0_5_11(release_source):
    release, read = release_source
    policy = read("managers/schedule_policy.py")
    totals = assigned(method(policy, "PrefillAdder", "add_one_req"), "total_tokens")
    assert totals, f"{release}: no total_tokens in PrefillAdder.add_one_req"
    reserves = [t for t in totals if t.endswith(("+ self.page_size", "+ self.per_req_token_overhead"))]
    assert bool(reserves) is (tuple(release) >= PAGE_RESERVED_FROM), (release, totals)
    if any(t.endswith("per_req_token_overhead") for t in reserves):
        overhead = assigned(method(policy, "PrefillAdder", "__init__"), "per_req_token_overhead")
        assert any(o.endswith("else self.page_size") for o in overhead), (release, overhead)


def test_the_longest_prompt_bound_and_the_first_request_exemption(release_source):
    release, read = release_source
    worker = read("managers/tp_worker.py")
    # 0.5.14-0.5.20 return it from get_worker_info as ``max_req_len - 5`` in a tuple
    assert re.search(r"max_req_input_len = (self\.)?max_req_len - 5|^\s+max_req_len - 5,$", worker, re.M), release
    assert re.search(r"max_req_len = min\(\s*self\.model_config\.context_len - 1,", worker), release
    assert "len(req.origin_input_ids) >= max_req_input_len" in read("managers/utils.py"), release
    assert re.search(r"len\(self\.can_run_list\) != 0|and self\.can_run_list\b", read("managers/schedule_policy.py"))


def test_the_tokenizer_managers_abort_and_the_ranks_pool_report(release_source):
    release, read = release_source
    manager = read("managers/tokenizer_manager.py")
    abort = method(manager, "TokenizerManager", "abort_request")
    assert abort is not None and [a.arg for a in abort.args.args] == ["self", "rid", "abort_all"], release
    assert [ast.literal_eval(d) for d in abort.args.defaults] == ["", False], release
    mixins = read("managers/tokenizer_communicator_mixin.py", "managers/tokenizer_control_mixin.py")
    assert "async def get_internal_state(self" in mixins, release
    assert '"token_capacity": int(' in read("managers/scheduler.py", "managers/scheduler_components/memory_usage.py")
    assert "req.rid.startswith(recv_req.rid)" in read("managers/scheduler.py"), release  # aborts match by prefix


def test_sglangs_own_warmup_budget_and_watchdog(release_source):
    release, read = release_source
    assert "SGLANG_WARMUP_TIMEOUT = EnvFloat(-1)" in read("environ.py"), release
    server = read("entrypoints/http_server.py")
    assert f"warmup_timeout if warmup_timeout > 0 else {SGLANG_WARMUP_BUDGET_S:g}" in server, release
    flat = re.sub(r"\s+", " ", server)
    assert f"warmup_timeout if warmup_timeout > 0 else {SGLANG_PREFILL_WARMUP_BUDGET_S:g}" in flat, release
    assert "await execute_warmups(" in server, release  # awaited in the lifespan, with no timeout of its own
    default = field_default(read("server_args.py"), "watchdog_timeout")
    if default is None:  # 0.5.20+: the fields live in arg_groups
        default = field_default(read("arg_groups/fields/device.py"), "watchdog_timeout")
    assert default == SGLANG_WATCHDOG_TIMEOUT_S, release
