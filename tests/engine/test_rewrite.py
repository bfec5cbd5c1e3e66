"""Stage A: the source rewrite moves exactly the output allocation, and refuses other shapes."""

import ast
import difflib
import textwrap

import pytest

from sglang_cp_symm.engine.rewrite import ShapeMismatch, already_in_context, rewrite_function_source
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
    # every other line is unchanged, and nothing is added but the context's opening and the allocation inside it
    allocation = "    input_tensor_full = torch.empty(\n        max_len * cp_size,\n        *input_tensor.shape[1:],\n    )\n"
    assert SHAPED.count(allocation) == 1
    expected = SHAPED.replace(allocation, "    with use_symmetric_memory(\n"
                                          "        get_attention_cp_group(), disabled=not is_allocation_symmetric()\n"
                                          "    ):\n" + textwrap.indent(allocation, "    "))
    assert new.strip("\n") == expected.strip("\n"), "\n".join(difflib.unified_diff(
        expected.splitlines(), new.splitlines(), "expected", "rewritten", lineterm=""))


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
        (SHAPED.replace("input_tensor_full = torch.empty(", "input_tensor_full = buffers[0]; unused = (").replace(
            "buffers[0]; unused", "buffers[0]\n    unused"), "not assigned from an allocating call"),
        (SHAPED.replace("input_tensor_full = torch.empty(", "other = torch.empty("), "no allocation of input_tensor_full"),
        ("@decorate\n" + SHAPED.lstrip(), "decorated"),
    ],
)
def test_other_shapes_are_refused_with_a_reason(source, reason):
    with pytest.raises(ShapeMismatch, match=reason):
        rewrite_function_source(source, KV)


ROUND_ROBIN = '''
def rerange(input_tensor, cp_size, forward_batch, stream):
    if is_nsa_prefill_cp_round_robin_split():
        output_tensor = input_tensor.new_empty((input_tensor.shape[0] * cp_size,))
        attn_tp_all_gather_into_tensor(
            output_tensor,
            input_tensor,
        )
        output_tensor = output_tensor.view(cp_size, -1)
        return output_tensor
    output_tensor = gather_other_way(input_tensor)
    output_tensor = output_tensor.view(-1)
    return output_tensor
'''


def test_the_allocation_right_before_the_gather_moves_even_inside_a_branch():
    """0.5.8's round-robin branch: several assignments of output_tensor; only the one that allocates the
    buffer handed to the gather, in the gather's own block, moves."""
    from sglang_cp_symm.targets import TARGETS as ALL

    rr = next(t for t in ALL if t.name == "nsa.rerange_output_tp")
    new = rewrite_function_source(ROUND_ROBIN, rr, output=True, send=True)
    with_node = next(n for n in ast.walk(ast.parse(new)) if isinstance(n, ast.With))
    assert ast.unparse(with_node.body[0]) == "output_tensor = input_tensor.new_empty((input_tensor.shape[0] * cp_size,))"
    assert "get_attention_tp_group()" in ast.unparse(with_node.items[0].context_expr)
    assert "cp_symm_stage_send(input_tensor, get_attention_tp_group(), None)" in new
    assert new.count("with use_symmetric_memory(") == 1
