"""Stage B: proof, on the real functions across real processes, that exactly the output buffer moves.

Runs ``sglang_cp_symm.rehearsal`` (gloo on CPU, real ``GroupCoordinator``, the
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

NEEDS_PATCH = {
    "0.5.10": {"cp_all_gather_reorganized_into_tensor", "cp_all_gather_reorganized_into_tensor_kv_cache"},
    "0.5.11": {"cp_all_gather_reorganized_into_tensor_kv_cache"},
    "0.5.12": set(),
}
RUNS = [("0.5.10", cp) for cp in range(2, 9)] + [("0.5.11", cp) for cp in (2, 5, 8)] + [("0.5.12", cp) for cp in (2, 8)]


@pytest.mark.parametrize("release,cp_size", RUNS)
def test_output_and_only_output_in_cp_symmetric_context(release, cp_size):
    cases = 24 if cp_size <= 4 else 12
    out = last_line(run_python(release, f"""
        import json
        from sglang_cp_symm import rehearsal
        if __name__ == "__main__":
            reports = rehearsal.run(cp_size={cp_size}, cases={cases}, seed={cp_size * 97})
            print(json.dumps(reports))
    """, timeout=600))
    reports = json.loads(out)
    assert sorted(reports) == [str(r) for r in range(cp_size)]
    for rank, report in reports.items():
        assert "error" not in report, report.get("error")
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
            op, nbytes, group, is_output = patched["inside"][0]
            assert is_output and group.startswith("attn_cp")
            # the rank-dependent F.pad, when it runs, stays outside
            assert not any("pad" in i[0] for i in patched["inside"])
            # and the unpatched function really lacked it where the register says so
            assert unpatched["output_in_context"] is (fn not in NEEDS_PATCH[release]), case
        expected_state = {f"cp_utils.{'reorganized_kv_cache' if n.endswith('kv_cache') else 'reorganized'}": "patched"
                          for n in NEEDS_PATCH[release]}
        assert {k: v for k, v in states.items() if v == "patched" and k.startswith("cp_utils")} == expected_state
    # uneven shares were exercised, including lengths not divisible by cp_size
    totals = [c["total"] for c in reports["0"]["results"]]
    assert any(t % cp_size for t in totals)
