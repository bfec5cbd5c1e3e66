"""The acceptance corpus: every real target of every release 0.5.6-0.5.23, read from the published wheels.

Where the register says the output needs the patch, the safety rule accepts the
function and the statement it moves is exactly the allocation named below (read by
hand from each release's source); where upstream allocates it in the context, the
rule sees that context and its group. With send staging on, every target accepts
the send edit, its group is the one of the context that holds the output, and
every name the inserted code reads is bound in that release's module (or is one the
plugin injects): nothing is left to raise ``NameError`` at run time. Post releases
are included. Wheels come from ci/fetch-wheels.sh (.cache/wheels); no sglang import.
"""

import ast
import os
import re

import pytest

from conftest import ROOT

from maint.patches import wheel_reader
from sglang_cp_symm.engine.rewrite import (
    find_output_edit,
    find_send_edit,
    output_state,
    rewrite_function_source,
)
from sglang_cp_symm.releases import Release
from sglang_cp_symm.targets import TARGETS, targets_for
from maint.source_survey import (
    find_function,
    function_source,
    injected_name_report,
    module_bindings,
    module_path,
)

pytestmark = pytest.mark.release

WHEELS = sorted((ROOT / ".cache" / "wheels").glob("sglang-*.whl"))
FIRST, LAST = Release.parse("0.5.6"), Release.parse("0.5.23")

#: The one statement each output patch moves (the register's ``output``, allocated right before the gather).
MOVED = {
    "nsa.reorganized_tp": "input_tensor_all = torch.empty(max_len * attn_tp_size, input_.shape[1], "
                          "device=input_.device, dtype=input_.dtype)",
    "nsa.rerange_output_tp": "output_tensor = input_tensor.new_empty((input_tensor.shape[0] * cp_size, "
                             "*input_tensor.shape[1:]))",
    "cp_utils.reorganized": "input_tensor_full = torch.empty(max_len * cp_size, input_tensor.shape[1], "
                            "device=input_tensor.device, dtype=input_tensor.dtype)",
    "cp_utils.reorganized_kv_cache": "input_tensor_full = torch.empty(max_len * cp_size, *input_tensor.shape[1:], "
                                     "device=input_tensor.device, dtype=input_tensor.dtype)",
}


def send_group(name: str, release: Release) -> str:
    """The group each target's staged send buffer uses: that of the context holding the output."""
    if name.endswith("_tp"):
        return "get_attention_tp_group()"
    if name.startswith("nsa."):
        return "get_attention_cp_group()"
    if name == "cp.zigzag":
        return "group"
    if name == "cp.interleave":
        return "get_parallel().attn_cp_group"
    if name == "cp.interleave_gather":
        return "parallel.attn_cp_group"
    if release >= Release.parse("0.5.16"):  # cp_utils from 0.5.16: `group = get_parallel().attn_cp_group`
        return "get_parallel().attn_cp_group" if name == "cp_utils.rerange_output" else "group"
    return "get_attention_cp_group()"


def releases():
    if not WHEELS:
        message = "no wheels in .cache/wheels: run ci/fetch-wheels.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = []
    for wheel in WHEELS:
        version = re.match(r"sglang-([0-9][^-]*)-", wheel.name).group(1)
        release = Release.parse(re.match(r"\d+\.\d+\.\d+", version).group(0))
        if FIRST <= release <= LAST:
            out.append((version, release, wheel_reader(wheel)))
    return out


def sources(read, release):
    for target in targets_for(release):
        text = read(module_path(target.module))
        node = find_function(ast.parse(text), target.function)
        assert node is not None, f"{target.dotted} missing in {release}"
        yield target, text, function_source(text, node)


def test_every_target_of_every_release_is_accepted_with_the_statement_the_register_names():
    checked, wrong = set(), []
    for version, release, read in releases():
        for target, text, source in sources(read, release):
            where = f"sglang {version} {target.name}"
            checked.add(release)
            state, group = output_state(source, target)
            if target.fixed_upstream_in(release):
                if state != "in context" or group != send_group(target.name, release):
                    wrong.append(f"{where}: {state} {group!r}")
                continue
            edit = find_output_edit(source, target)
            if edit.statement != MOVED[target.name]:
                wrong.append(f"{where}: moves {edit.statement!r}")
            for send in (False, True):
                new = rewrite_function_source(source, target, output=True, send=send)
                with_nodes = [n for n in ast.walk(ast.parse(new)) if isinstance(n, ast.With)]
                if [ast.unparse(w.body[0]) for w in with_nodes] != [MOVED[target.name]] or len(with_nodes[0].body) != 1:
                    wrong.append(f"{where}: send={send}: the context holds {[ast.unparse(w) for w in with_nodes]}")
    assert not wrong, "\n".join(wrong)
    assert {Release.parse(f"0.5.{n}") for n in range(6, 24)} <= checked


def test_send_staging_is_accepted_everywhere_on_the_group_of_the_outputs_context():
    wrong = []
    for version, release, read in releases():
        for target, text, source in sources(read, release):
            edit = find_send_edit(source, target)
            if edit.group_text != send_group(target.name, release):
                wrong.append(f"sglang {version} {target.name}: staged on {edit.group_text!r}")
            output = not target.fixed_upstream_in(release)
            new = rewrite_function_source(source, target, output=output, send=True)
            assert new.count("cp_symm_stage_send(") == 1
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("send", [False, True], ids=["send-off", "send-on"])
def test_every_name_the_inserted_code_reads_resolves_in_every_release(send):
    wrong = []
    for version, release, read in releases():
        for target, text, source in sources(read, release):
            report = injected_name_report(text, target, release, send)
            bad = {n: w for n, w in report.items() if n == "refused" or w == "missing"}
            if bad:
                wrong.append(f"sglang {version} {target.name}: {bad}")
            if send:
                assert report.get("cp_symm_stage_send", "").startswith(("module", "injected")), report
    assert not wrong, "\n".join(wrong)


def test_the_register_group_would_have_raised_name_error_in_the_round_robin_branch_of_0_5_16_to_0_5_19():
    """The bug this replaces: the round-robin branch stages its send on the register's group text,
    ``get_attention_cp_group()``, which cp_utils no longer binds from 0.5.16 (dp_attention dropped it)."""
    target = next(t for t in TARGETS if t.name == "cp_utils.rerange_output")
    seen = 0
    for version, release, read in releases():
        if not Release.parse("0.5.16") <= release <= Release.parse("0.5.19"):
            continue
        text = read(module_path(target.module))
        assert "get_attention_cp_group" not in module_bindings(ast.parse(text))
        assert "get_parallel" in module_bindings(ast.parse(text))
        assert injected_name_report(text, target, release, send=True) == {
            "cp_symm_stage_send": "injected from sglang_cp_symm.engine.send_staging", "get_parallel": "module"}
        seen += 1
    assert seen >= 4


def test_the_moved_allocation_is_where_the_cp_site_survey_found_it():
    """An independent reading (the CP-site survey of every wheel): 0.5.11's KV-cache gather allocates its output
    outside the context at cp_utils.py line 182."""
    (version, release, read), = [r for r in releases() if r[0] == "0.5.11"]
    target = next(t for t in TARGETS if t.name == "cp_utils.reorganized_kv_cache")
    text = read(module_path(target.module))
    node = find_function(ast.parse(text), target.function)
    edit = find_output_edit(function_source(text, node), target)
    assert node.lineno + edit.first_line == 182
