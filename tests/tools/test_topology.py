"""The doctor's topology verdicts (issue 21 item 5): a CP group across nodes, or without NVLink between two of its
GPUs, cannot run NCCL's symmetric kernels. The GPU matrix is written in ``nvidia-smi topo -m``'s documented format
(this machine has no GPU and no nvidia-smi: the read itself is tested to say so, in a real process)."""

import json

import pytest

from sglang_cp_symm.tools.topology import TopologyError, cp_groups, judge, parse_topo, read_topology

from conftest import run_python

NVSWITCH_8 = "\t" + "\t".join(f"GPU{i}" for i in range(8)) + "\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\n" + "".join(
    f"GPU{i}\t" + "\t".join(" X " if i == j else "NV18" for j in range(8)) + "\t0-55\t0\t\tN/A\n" for i in range(8)
) + "\nLegend:\n\n  X    = Self\n  SYS  = Connection traversing PCIe as well as the SMP interconnect\n  NV#  = Connection traversing a bonded set of # NVLinks\n"
PCIE_4 = ("\tGPU0\tGPU1\tGPU2\tGPU3\tCPU Affinity\tNUMA Affinity\n"
          "GPU0\t X \tNV4\tSYS\tSYS\t0-31\t0\n"
          "GPU1\tNV4\t X \tSYS\tSYS\t0-31\t0\n"
          "GPU2\tSYS\tSYS\t X \tNV4\t32-63\t1\n"
          "GPU3\tSYS\tSYS\tNV4\t X \t32-63\t1\n")


def test_the_groups_are_sglangs_own_example():
    # parallel_state.initialize_model_parallel's docstring (0.5.12-0.5.23): tp 8, attn_cp 2 (attn_tp 4) gives
    # "4 attention context-parallel groups: [g0, g4], [g1, g5], [g2, g6], [g3, g7]"
    assert cp_groups(8, 2) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert cp_groups(4, 4) == [[0, 1, 2, 3]]  # attn_cp == tp: the CP group is the TP group
    assert cp_groups(8, 2, attn_dp=2) == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert cp_groups(4, 2, pp=2) == [[0, 2], [1, 3], [4, 6], [5, 7]]


@pytest.mark.parametrize("tp,cp,dp", [(8, 3, 1), (6, 4, 1), (8, 2, 3), (0, 1, 1), (4, -2, 1)])
def test_a_layout_sglang_refuses_is_one_line(tp, cp, dp):
    with pytest.raises(TopologyError) as err:
        cp_groups(tp, cp, dp)
    assert "\n" not in str(err.value) and "--" in str(err.value)


def test_the_matrix_is_read_from_nvidia_smis_format():
    links = parse_topo(NVSWITCH_8)
    assert links[(0, 7)] == "NV18" and links[(3, 3)] == "X" and len(links) == 64
    assert parse_topo("No devices were found") is None


def test_one_node_all_nvlink_is_ok():
    v = judge(cp_groups(8, 2), 1, parse_topo(NVSWITCH_8), "nvidia-smi topo -m")
    assert v.state == "ok" and "4 of 2 ranks" in v.message


def test_a_group_across_nodes_cannot_engage():
    v = judge(cp_groups(16, 2), 2, parse_topo(NVSWITCH_8), "nvidia-smi topo -m")   # [0, 8]: node 0 and node 1
    assert v.state == "spans nodes" and "[0, 8]" in v.message and "memory for nothing" in v.message


def test_a_pcie_pair_inside_a_group_cannot_engage():
    v = judge(cp_groups(4, 2), 1, parse_topo(PCIE_4), "nvidia-smi topo -m")        # [0, 2]: SYS
    assert v.state == "no all-NVLink path" and "GPU0 and GPU2" in v.message and "SYS" in v.message
    assert judge(cp_groups(4, 2, attn_dp=2), 1, parse_topo(PCIE_4), "t").state == "ok"   # [0, 1], [2, 3]: NV4


def test_without_a_topology_it_says_it_could_not_read_it():
    v = judge(cp_groups(8, 2), 1, None, "nvidia-smi is not on this machine's PATH")
    assert v.state == "unknown" and "could not be read" in v.message
    assert judge([[0]], 1, None).state == "no CP"
    with pytest.raises(TopologyError):
        judge(cp_groups(8, 2), 3, None)


def test_on_this_machine_the_read_says_why_not():
    links, why = read_topology()
    assert links is None and why


@pytest.mark.release
def test_the_doctor_renders_each_verdict_and_check_fails_where_no_kernel_can_engage():
    code = """
import json, sys
from sglang_cp_symm.tools.doctor import ServeShape, build_report, check_failed
out = {}
for name, shape in {"across": ServeShape(cp_size=2, tp_size=16, nnodes=2),
                    "one node": ServeShape(cp_size=2, tp_size=8),
                    "invalid": ServeShape(cp_size=3, tp_size=8)}.items():
    report = build_report("2.30.7", shape)
    out[name] = [report["topology"]["state"], check_failed(report), report["findings"]]
print(json.dumps(out))
"""
    out = json.loads(run_python("0.5.11", code, env={"SGLANG_CP_SYMM": "1"}).stdout.strip().splitlines()[-1])
    assert out["across"][:2] == ["spans nodes", True] and any("topology:" in f for f in out["across"][2])
    assert out["one node"][:2] == ["unknown", False]
    assert out["invalid"][:2] == ["invalid", True]
