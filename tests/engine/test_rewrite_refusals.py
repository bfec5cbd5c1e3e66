"""The refusal corpus (``rewrite_corpus.py``): every unsafe shape is refused, by the rewrite and by the patcher.

Stage A checks the rewrite itself (``find_output_edit`` and ``rewrite_function_source``);
the stage-B test builds a real module from each case, imports it next to a real
sglang release (whose ``use_symmetric_memory`` the patcher would inject) and asserts
that the patcher reports ``skipped: <the reason>`` and leaves the function, the same
object, and the module's names exactly as they were. The positive control, patched
and run, shows that each case is refused for its own change.
"""

import ast
import json
import re

import pytest

from conftest import last_line, run_python
from rewrite_corpus import ALIASED, BASE, CASES, TARGET

from sglang_cp_symm.engine.rewrite import (
    AlreadyInContext,
    ShapeMismatch,
    already_in_context,
    find_output_edit,
    rewrite_function_source,
)


def test_the_positive_control_is_accepted():
    edit = find_output_edit(BASE, TARGET)
    assert edit.statement == "out = torch.empty(max_len * cp_size, *x.shape[1:], device=x.device, dtype=x.dtype)"
    assert "with use_symmetric_memory(" in rewrite_function_source(BASE, TARGET)


def test_the_corpus_covers_every_class_of_the_issue():
    ids = {case.id for case in CASES}
    assert {"size-from-local-length", "size-from-rank-index", "helper-allocating-on-some-ranks",
            "context-around-another-buffer", "view-not-allocation", "allocation-chosen-by-an-if",
            "allocation-chosen-by-a-conditional-expression", "early-return-between-allocation-and-use",
            "allocation-in-a-loop", "out-argument", "try-except-around-the-allocation",
            "empty-like-of-a-per-rank-tensor", "size-from-keyword-only-arguments",
            "second-allocation-in-the-statement"} <= ids
    assert len(ids) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_unsafe_shape_is_refused_with_its_reason(case):
    assert case.source != BASE
    with pytest.raises(ShapeMismatch, match=case.reason) as refused:
        find_output_edit(case.source, TARGET, case.context_names)
    assert not isinstance(refused.value, AlreadyInContext)
    with pytest.raises(ShapeMismatch, match=case.reason):
        rewrite_function_source(case.source, TARGET, output=True, send=False, context_names=case.context_names)


def test_the_context_around_another_buffer_is_not_upstream():
    case = next(c for c in CASES if c.id == "context-around-another-buffer")
    assert not already_in_context(ast.parse(case.source).body[0], TARGET)


def test_an_alias_of_the_context_is_recognised_and_nothing_is_nested():
    with pytest.raises(AlreadyInContext, match=ALIASED.reason):
        find_output_edit(ALIASED.source, TARGET, ALIASED.context_names)
    assert already_in_context(ast.parse(ALIASED.source).body[0], TARGET, ALIASED.context_names)
    # without knowing the alias the rule still refuses (a with statement around the allocation), never nests
    with pytest.raises(ShapeMismatch, match="inside a with statement"):
        find_output_edit(ALIASED.source, TARGET)


PATCHER_RUN = r'''
import dataclasses, importlib, json, pathlib, sys, tempfile, torch
sys.path.insert(0, "{tests}")
from rewrite_corpus import ALIASED, BASE, CASES, TARGET, Case
from sglang_cp_symm.engine.patching import Patcher


def run():  # locals only: the patcher rebinds every module-level copy of a function it patches
    folder = pathlib.Path(tempfile.mkdtemp())
    sys.path.insert(0, str(folder))
    results = {{}}
    for number, case in enumerate([Case("control", BASE, ""), ALIASED] + CASES):
        name = f"cp_symm_corpus_{{number}}"
        (folder / f"{{name}}.py").write_text(case.module_text())
        module = importlib.import_module(name)
        before, names = module.gather, dict(vars(module))
        patcher = Patcher()
        status = patcher.patch_target(dataclasses.replace(TARGET, module=name), module, True, False)
        entry = {{"state": status.state, "detail": status.detail, "same": module.gather is before,
                  "names_kept": dict(vars(module)) == names}}
        if case.id == "control":
            x = torch.arange(6.0).reshape(3, 2)
            entry["result"] = module.gather(x, 6, 2, None, None).tolist()
            entry["original"] = before(x, 6, 2, None, None).tolist()
            entry["injected"] = sorted(set(vars(module)) - set(names))
            patcher.unpatch()
            entry["restored"] = module.gather is before and dict(vars(module)) == names
        results[case.id] = entry
    return results


print(json.dumps(run()))
'''


@pytest.mark.release
def test_the_patcher_refuses_every_case_and_leaves_the_module_as_it_was():
    from conftest import ROOT

    results = json.loads(last_line(run_python("0.5.11", PATCHER_RUN.format(tests=ROOT / "tests" / "engine"))))
    control = results.pop("control")
    assert control["state"] == "patched" and not control["same"]
    assert control["injected"] == ["is_allocation_symmetric", "use_symmetric_memory"]
    assert control["result"] == control["original"] and control["restored"]
    aliased = results.pop(ALIASED.id)
    assert aliased["state"] == "upstream" and aliased["same"] and aliased["names_kept"]
    wrong = []
    for case in CASES:
        got = results[case.id]
        if not (got["state"] == "skipped" and re.search(case.reason, got["detail"]) and got["same"]
                and got["names_kept"]):
            wrong.append(f"{case.id}: {got}")
    assert not wrong, "\n".join(wrong)
