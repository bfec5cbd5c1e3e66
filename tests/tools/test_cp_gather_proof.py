"""Stage B: proof, on the real functions across real processes, that exactly the output buffer moves.

Runs ``sglang_cp_symm.tools.rehearsal`` (gloo on CPU, real ``GroupCoordinator``, the
release's own ``cp_utils``), with uneven per-rank lengths, cp_size 2 to 8, three
dtypes, both target functions, many random cases per run. Faked, because they
need a GPU: sglang's ``SymmetricMemoryContext`` (a recording stand-in) and the
CUDA kernel of ``sglang::reg_all_gather_into_tensor`` (a CPU kernel over the
group's own gloo all-gather). See the rehearsal module's docstring.
"""

import json

import pytest

from conftest import last_line, run_python

pytestmark = pytest.mark.release

KV = "cp_utils.cp_all_gather_reorganized_into_tensor_kv_cache"
HIDDEN = "cp_utils.cp_all_gather_reorganized_into_tensor"
NSA = "utils.cp_attn_tp_all_gather_reorganazied_into_tensor"
NEEDS_PATCH = {"0.5.8": {NSA}, "0.5.9": set(), "0.5.10": {HIDDEN, KV}, "0.5.11": {KV}, "0.5.12": set()}
PRESENT = {"0.5.8": {NSA}, "0.5.9": {NSA}, "0.5.10": {HIDDEN, KV, NSA}, "0.5.11": {HIDDEN, KV}, "0.5.12": {HIDDEN, KV}}
RUNS = ([("0.5.10", cp) for cp in range(2, 9)] + [("0.5.11", cp) for cp in (2, 5, 8)]
        + [("0.5.12", cp) for cp in (2, 8)] + [("0.5.9", 3), ("0.5.8", 2), ("0.5.8", 6)])
SEND_RUNS = [("0.5.8", 3), ("0.5.9", 2), ("0.5.10", 3), ("0.5.11", 8), ("0.5.12", 5)]


def rehearse(release, cp_size, cases, send=False):
    args = f"cp_size={cp_size}, cases={cases}, seed={cp_size * 97}" + (", send=True, nccl='2.27.7'" if send else "")
    out = last_line(run_python(release, f"""
        import json
        from sglang_cp_symm.tools import rehearsal
        if __name__ == "__main__":
            print(json.dumps(rehearsal.run({args})))
    """, timeout=600))
    reports = json.loads(out)
    assert sorted(reports) == [str(r) for r in range(cp_size)]
    for report in reports.values():
        assert "error" not in report, report.get("error")
    assert {c["function"] for c in reports["0"]["results"]} == PRESENT[release]
    return reports


@pytest.mark.parametrize("release,cp_size", RUNS)
def test_output_and_only_output_in_cp_symmetric_context(release, cp_size):
    reports = rehearse(release, cp_size, 24 if cp_size <= 4 else 12)
    assert sorted(reports) == [str(r) for r in range(cp_size)]
    for rank, report in reports.items():
        states = {k: v["state"] for k, v in report["status"]["targets"].items()}
        for case in report["results"]:
            fn = case["function"]
            assert sum(case["lengths"]) == case["total"]
            patched, unpatched = case["patched"], case["unpatched"]
            # bit-identical to the unpatched function, and equal to the true concatenation of all ranks
            assert case["bit_identical"], case
            assert patched["equal_expected"] and unpatched["equal_expected"], case
            # exactly one all-gather; its output, and nothing else, allocated inside the CP context
            assert patched["gathers"] == 1
            assert patched["output_in_context"], case
            assert len(patched["inside"]) == 1, patched["inside"]
            op, nbytes, group, is_output, is_input = patched["inside"][0]
            assert is_output and not is_input and group.startswith("attn_cp")  # the rehearsal's CP group
            # the rank-dependent F.pad, when it runs, stays outside
            assert not any("pad" in i[0] for i in patched["inside"])
            # and the unpatched function really lacked it where the register says so
            assert unpatched["output_in_context"] is (fn not in NEEDS_PATCH[release]), case
        names = {KV: "cp_utils.reorganized_kv_cache", HIDDEN: "cp_utils.reorganized", NSA: "nsa.reorganized_tp"}
        expected_state = {names[n]: "patched" for n in NEEDS_PATCH[release]}
        assert {k: v for k, v in states.items() if v == "patched" and k in names.values()} == expected_state
    # uneven shares were exercised, including lengths not divisible by cp_size
    totals = [c["total"] for c in reports["0"]["results"]]
    assert any(t % cp_size for t in totals)


@pytest.mark.parametrize("release,cp_size", SEND_RUNS)
def test_send_mode_stages_an_equal_input_buffer_in_the_context(release, cp_size):
    """With SGLANG_CP_SYMM_SEND=1 and a policy that engages it (NCCL 2.27.x given, as no NCCL exists on
    CPU): the tensor handed to the all-gather as input was allocated in the attention-CP context, has
    the same size on every rank, the output is still there too, and results stay bit-identical."""
    reports = rehearse(release, cp_size, 12, send=True)
    per_case_sizes = {}
    for rank, report in reports.items():
        assert all(t["state"] == "patched" for n, t in report["status"]["targets"].items() if n != "pool.attention_cp_registration")
        for case in report["results"]:
            patched = case["patched"]
            assert case["bit_identical"] and patched["equal_expected"], case
            assert patched["output_in_context"] and patched["input_in_context"], case
            assert len(patched["inside"]) == 2, patched["inside"]
            staged = [i for i in patched["inside"] if i[4]]
            assert len(staged) == 1 and staged[0][2].startswith("attn_cp")
            per_case_sizes.setdefault(case["case"], set()).add(staged[0][1])
            assert not case["unpatched"]["input_in_context"]
    # the staged send buffer has one size per case on every rank: rank-uniform pool growth
    assert per_case_sizes and all(len(sizes) == 1 for sizes in per_case_sizes.values())


def test_send_mode_off_changes_nothing_for_the_input():
    reports = rehearse("0.5.11", 2, 8)
    for report in reports.values():
        for case in report["results"]:
            assert not case["patched"]["input_in_context"]
