"""Stage A: the source rewrite moves exactly the output allocation, and refuses other shapes."""

import ast
import textwrap

import pytest

from sglang_cp_symm.rewrite import ShapeMismatch, already_in_context, rewrite_function_source
from sglang_cp_symm.targets import TARGETS

KV = next(t for t in TARGETS if t.name == "cp_utils.reorganized_kv_cache")

SHAPED = '''
def gather(input_tensor, total_len, cp_size, forward_batch, stream):
    max_len = (total_len + cp_size - 1) // cp_size
    if max_len > input_tensor.shape[0]:
        input_tensor = F.pad(input_tensor, [0, 1])
    input_tensor_full = torch.empty(
        max_len * cp_size,
        *input_tensor.shape[1:],
    )

    get_attention_cp_group().cp_all_gather_into_tensor_async(
        input_tensor_full, input_tensor, stream
    )
    return input_tensor_full
'''


def test_only_the_output_statement_moves():
    new = rewrite_function_source(SHAPED, KV)
    func = ast.parse(new).body[0]
    withs = [n for n in ast.walk(func) if isinstance(n, ast.With)]
    assert len(withs) == 1
    (with_node,) = withs
    assert [type(s).__name__ for s in with_node.body] == ["Assign"]
    assert with_node.body[0].targets[0].id == "input_tensor_full"
    assert ast.unparse(with_node.items[0].context_expr) == (
        "use_symmetric_memory(get_attention_cp_group(), disabled=not is_allocation_symmetric())"
    )
    # the pad stays outside, in its `if`
    assert "F.pad" not in ast.unparse(with_node)
    # every other line is unchanged
    removed = set(textwrap.dedent(SHAPED).splitlines()) - set(new.splitlines())
    assert all(line.strip().startswith(("input_tensor_full =", "max_len * cp_size", "*input_tensor", ")")) for line in removed)


def test_already_fixed_function_is_refused():
    fixed = rewrite_function_source(SHAPED, KV)
    assert already_in_context(ast.parse(fixed).body[0], KV)
    with pytest.raises(ShapeMismatch, match="already"):
        rewrite_function_source(fixed, KV)


@pytest.mark.parametrize(
    "source,reason",
    [
        (SHAPED.replace("input_tensor_full, input_tensor, stream", "input_tensor, input_tensor_full, stream"), "expected one all-gather"),
        (SHAPED.replace("get_attention_cp_group()", "get_tp_group()"), "not on the register's group"),
        (SHAPED.replace("    return input_tensor_full", "    input_tensor_full = None\n    return input_tensor_full"), "one assignment"),
        ("@decorate\n" + SHAPED.lstrip(), "decorated"),
    ],
)
def test_other_shapes_are_refused_with_a_reason(source, reason):
    with pytest.raises(ShapeMismatch, match=reason):
        rewrite_function_source(source, KV)
