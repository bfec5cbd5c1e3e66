"""The rehearsal as one spawn, one CP size and a list of cases: what a patched *source tree* does.

``tests/tools/test_patches_and_sweep.py`` applies a ``patches/`` diff to a copy of a release's sglang,
runs it with the plugin off, and reads each case's allocations: the diff must give what the runtime
patch gives. Only that test uses this shape of the result, so it lives here, outside the wheel; the
proof itself (``sglang_cp_symm.tools.rehearsal.prove``) stays in the package, as ``demo`` runs it.
Import it with the checkout at the end of ``sys.path``, so the installed package is the one rehearsed.
"""

from __future__ import annotations

from typing import Dict, Optional

from sglang_cp_symm.tools.rehearsal import Config, prove


def run(cp_size: int = 2, cases: int = 20, seed: int = 1234, patch: bool = True, send: bool = False,
        nccl: Optional[str] = None, timeout: float = 300) -> Dict[int, dict]:
    """``cp_size`` processes, each target's calls (up to ``cases``), unpatched vs patched (``send``, ``nccl``).

    Each rank's report: {"status", "results": [{case, function, lengths, total, dtype, unpatched, patched,
    bit_identical}]} with, per side, equal_expected / gathers / inside / outside / output_in_context /
    input_in_context. Calls zigzag makes on plain CPU tensors and the empty batch are left out (no context,
    or no gather, by design).
    """
    configs = [Config("off", "plugin off")]
    if patch:
        configs.append(Config("on", "plugin on", enabled=True, send=send, nccl=nccl))
    rounds = max(1, cases // 8)
    result = prove(world=cp_size, sizes=(cp_size,), configs=configs, seed=seed, rounds=rounds, timeout=timeout)
    if "error" in result:
        return {0: {"error": result["error"]}}
    out: Dict[int, dict] = {}
    for rank, rep in result["ranks"].items():
        rows = []
        for index, entry in enumerate(rep["calls"].values()):
            if entry["plain_cpu"] or entry["expected_gathers"] == 0 or len(rows) >= cases:
                continue
            sides = {}
            for label, config in (("unpatched", "off"), ("patched", "on" if patch else "off")):
                run_ = entry["runs"][config]
                if "error" in run_:
                    return {0: {"error": run_["error"]}}
                sides[label] = {"equal_expected": run_["correct"], "gathers": run_["gathers"],
                                "inside": [(i["op"], i["bytes"], i["group"], i["is_output"], i["is_input"])
                                           for i in run_["inside"]],
                                "outside": run_["outside"], "output_in_context": run_["output_in_context"],
                                "input_in_context": run_["input_in_context"],
                                "same_as_off": run_["same_as_off"]}
            rows.append({"case": index, "function": f"{entry['target']} {entry['branch']}",
                         "lengths": entry["lengths"], "total": sum(entry["lengths"]), "dtype": entry["dtype"],
                         "bit_identical": sides["patched"]["same_as_off"] is not False, **sides})
        out[int(rank)] = {"status": rep["status"].get("on" if patch else "off"), "results": rows}
    return out
