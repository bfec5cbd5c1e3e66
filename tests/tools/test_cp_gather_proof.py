"""Stage B: the proof, per release, on the real functions across real processes, that exactly the output moves.

For each release of ``PROOF_RELEASES`` (conftest: set "ci" of ci/releases.txt, one release of every
distinct digest, docs/coverage.md: today every release 0.5.6-0.5.23) one run of
``sglang_cp_symm.tools.rehearsal.prove``: the release's modules imported once, four ranks forked,
gloo groups of CP size 2, 3 and 4, every target of the register called as that release's signature
says, on every branch (padded and unpadded ranks, round-robin and in-sequence reranges, zigzag's
logical lengths, interleave's gather index, equal-shard fast path and empty batch), in five
configurations: plugin off; on with the NCCL the release pins; on with SGLANG_CP_SYMM_SEND=1; send
with a policy where staging engages (NCCL 2.27.7); and the race opt-in where the pinned NCCL is racy.

Faked, because they need a GPU: sglang's ``SymmetricMemoryContext`` (a recording stand-in), the CUDA
kernel of ``sglang::reg_all_gather_into_tensor`` (a CPU kernel over the group's own gloo all-gather),
and ``is_cuda`` for the zigzag calls that show the context a GPU gets (a tensor subclass; the same
call on a plain CPU tensor runs too). See the rehearsal module's docstring.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from conftest import PROOF_RELEASES, ROOT, require_release, run_python

pytestmark = pytest.mark.release

_PROOFS: dict = {}


def dcp_name(release: str):
    """The name this release builds its DCP group with, read from its own installed source (sglang_groups), or
    None where it has none (before 0.5.15)."""
    from sglang_groups import read_groups

    root = require_release(release)
    groups = read_groups(lambda path: (root / path).read_text() if (root / path).is_file() else None)
    dcp = groups.roles["DCP"]
    names = sorted({b.name for b in dcp.built}) if dcp else []
    assert len(names) <= 1, f"sglang {release} builds its DCP group under several names: {names}"
    return names[0] if names else None


def proof(release: str) -> dict:
    """One rehearsal run per release, shared by every test of this module."""
    if release not in _PROOFS:
        with tempfile.TemporaryDirectory() as folder:
            out = os.path.join(folder, "proof.json")
            result = run_python(release, f"""
                import json, sys
                sys.path.append({str(ROOT)!r})  # maint/ from the checkout, after the installed sglang_cp_symm
                from maint.rehearsal_cases import dcp_case
                from sglang_cp_symm.tools import rehearsal
                if __name__ == "__main__":
                    json.dump(rehearsal.prove(extra=dcp_case({dcp_name(release)!r})), open({out!r}, "w"))
            """, timeout=600, fresh=False)
            assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
            with open(out) as f:
                _PROOFS[release] = json.load(f)
    return _PROOFS[release]


def _pins(release: str):
    for line in (ROOT / "ci" / "releases.txt").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] == release:
            return fields[2:]
    return []


def register(release: str):
    from sglang_cp_symm.releases import Release
    from sglang_cp_symm.targets import targets_for

    return {t.name: t for t in targets_for(Release.parse(release))}


def calls(release: str):
    from sglang_cp_symm.tools.rehearsal import merged_calls

    return merged_calls(proof(release))


def states(release: str, config: str) -> dict:
    return {name: t for name, t in proof(release)["ranks"]["0"]["status"][config]["targets"].items()}


def guarded(state: dict) -> bool:
    """The race guard holds this target: none of its buffers is in any context, upstream's or the plugin's."""
    return state["state"] == "guarded"


def moves(state: dict, what: str) -> bool:
    """The status says the plugin moved ``what`` ("output" or "send") into the context for this target."""
    return state["state"] == "patched" and what in state["detail"].split("+")


@pytest.mark.parametrize("release", PROOF_RELEASES)
def test_every_module_imports_and_every_call_runs(release):
    result = proof(release)
    assert "error" not in result, result["error"]
    assert set(result["targets"]) == set(register(release)), "every target of the register was rehearsed"
    assert result["sizes"] == [2, 3, 4]
    seen = {(c["target"], c["cp"]) for c in calls(release)}
    assert seen == {(t, cp) for t in register(release) for cp in (2, 3, 4)}
    for call in calls(release):
        assert sorted(call["ranks"]) == [str(r) for r in range(call["cp"])]
        for rank, runs in call["ranks"].items():
            for config, run in runs.items():
                assert "error" not in run, f"{call['target']} {call['branch']} cp {call['cp']}, {config}, " \
                                           f"rank {rank}:\n{run['error']}"


@pytest.mark.parametrize("release", PROOF_RELEASES)
def test_results_are_correct_and_bit_identical_plugin_off_and_on(release):
    uneven = 0
    for call in calls(release):
        uneven += len(set(call["lengths"])) > 1
        for rank, runs in call["ranks"].items():
            for config, run in runs.items():
                if "error" in run:
                    continue  # reported by test_every_module_imports_and_every_call_runs
                where = f"{call['target']} {call['branch']} cp {call['cp']} rank {rank} {config}"
                assert run["correct"], f"{where}: not the full tensor"
                assert run["same_as_off"] in (None, True), f"{where}: differs from the plugin-off result"
                assert run["gathers"] == call["expected_gathers"], where
    assert uneven >= 3 * len(register(release)) - 1, "uneven per-rank shares on every target and CP size"


@pytest.mark.parametrize("release", PROOF_RELEASES)
def test_exactly_the_buffers_the_status_names_move_into_the_cp_context(release):
    """Per configuration and target: the output is in the attention-CP context iff sglang put it there or the
    status says "patched (output)", and the target is not "guarded" (issue 16: on a racy NCCL with the plugin on,
    upstream's own CP buffers leave the pool too, and with SGLANG_CP_SYMM_ALLOW_NCCL_RACE=1 they are back); the
    send buffer iff the status says "send"; nothing else ever is; and what is there has the same size on every
    rank (window registration is collective)."""
    from sglang_cp_symm.releases import Release

    result = proof(release)
    targets = register(release)
    groups = result["ranks"]["0"]["groups"]
    for config in [c["name"] for c in result["configs"]]:
        status = states(release, config) if config != "off" else {}
        for call in calls(release):
            if call["expected_gathers"] == 0:
                continue
            target = targets[call["target"]]
            cpu_zigzag = call["plain_cpu"]
            upstream = target.fixed_upstream_in(Release.parse(release)) and not cpu_zigzag
            state = status.get(call["target"], {"state": "off", "detail": ""})
            want_output = (upstream or (moves(state, "output") and not cpu_zigzag)) and not guarded(state)
            want_input = moves(state, "send")
            sizes = set()
            for rank, runs in call["ranks"].items():
                run = runs[config]
                if "error" in run:
                    continue  # reported by test_every_module_imports_and_every_call_runs
                where = f"{call['target']} {call['branch']} cp {call['cp']} rank {rank} {config} ({state})"
                assert run["output_in_context"] is want_output, where
                assert run["input_in_context"] is want_input, where
                assert len(run["inside"]) == want_output + want_input, f"{where}: {run['inside']}"
                for alloc in run["inside"]:
                    assert alloc["is_output"] or alloc["is_input"], f"{where}: {alloc}"
                    assert alloc["group"] == groups[str(call["cp"])], f"{where}: {alloc}"
                sizes.add((run["output_bytes"] if want_output else None, run["input_bytes"] if want_input else None))
            assert len(sizes) <= 1, f"{call['target']} {call['branch']} cp {call['cp']} {config}: sizes {sizes}"


@pytest.mark.parametrize("release", PROOF_RELEASES)
def test_sglang_itself_lacks_the_fix_where_the_register_says(release):
    from sglang_cp_symm.releases import Release

    targets = register(release)
    needs = {n for n, t in targets.items() if not t.fixed_upstream_in(Release.parse(release))}
    for call in calls(release):
        if call["expected_gathers"] == 0 or call["plain_cpu"]:
            continue
        for rank, runs in call["ranks"].items():
            assert runs["off"]["output_in_context"] is (call["target"] not in needs), (call["target"], rank)


@pytest.mark.parametrize("release", PROOF_RELEASES)
def test_the_policy_of_the_pinned_nccl_is_what_the_run_shows(release):
    """With the NCCL the release pins (pins.py), what is patched follows the policy's decision: on a racy
    NCCL where the output alone engages the kernel (2.29.2-2.30.6: 0.5.18-0.5.21's 2.29.7) nothing is patched."""
    result = proof(release)
    on = result["ranks"]["0"]["status"]["on"]
    decision = on["nccl"]
    from sglang_cp_symm.pins import pin_for
    from sglang_cp_symm.releases import Release

    assert decision["version"] == pin_for(Release.parse(release)).nccl
    from sglang_cp_symm.engine.nccl_policy import NcclVersion, line_for

    if line_for(NcclVersion.parse(decision["version"])).race:  # the race guard holds every CP all-gather
        assert on["race_guard"]["engaged"] and on["outcome"].startswith("guarded: "), on
        gathers = {n: t["state"] for n, t in on["targets"].items() if not n.startswith("pool.")}
        assert set(gathers.values()) <= {"guarded", "absent"} and gathers.get("race_guard") == "guarded", gathers
        assert on["targets"]["pool.attention_cp_registration"]["state"] in ("guarded", "upstream"), on["targets"]
        race = result["ranks"]["0"]["status"]["on+send+race"]
        assert not race["race_guard"]["engaged"] and "guarded" not in {t["state"] for t in race["targets"].values()}
        return
    for name, state in on["targets"].items():
        if not decision["patch_outputs"]:
            assert state["state"] != "patched", (name, state, decision["reason"])
        if state["state"] == "held back":
            assert not decision["patch_outputs"], (name, state)
    send = result["ranks"]["0"]["status"]["on+send"]
    for name, state in send["targets"].items():
        assert not moves(state, "send") or send["nccl"]["stage_send"], (name, state, send["nccl"])


@pytest.mark.parametrize("release", PROOF_RELEASES)
def test_the_guard_keeps_the_real_dcp_gathers_buffers_out_of_every_context(release):
    """sglang's own decode-CP q all-gather (``layers/dcp/comm.all_gather_q_for_mla_decode``, 0.5.15+) on a DCP group
    of the name the release builds it with: sglang allocates its send buffer and ``GroupCoordinator.all_gather`` its
    output inside that group's context. Where the race guard is engaged, neither is, nor anything else the call
    allocates; where it is not (plugin off, the opt-in, a safe NCCL), both are, as sglang wrote it; the result is
    the true gather every time."""
    from sglang_cp_symm.engine.race_guard import DCP_FROM
    from sglang_cp_symm.releases import Release

    result = proof(release)
    name = dcp_name(release)
    assert (name is not None) is (Release.parse(release) >= DCP_FROM), (release, name)
    if name is None:
        assert all("extra" not in r for r in result["ranks"].values()), "a DCP gather ran on a release without one"
        return
    engaged_somewhere = held_somewhere = False
    for config in [c["name"] for c in result["configs"]]:
        on = result["ranks"]["0"]["status"][config]
        engaged = bool(on and on["race_guard"] and on["race_guard"]["engaged"])
        engaged_somewhere |= engaged
        for rank, report in result["ranks"].items():
            run = report["extra"][config]
            where = f"sglang {release} {config} rank {rank} ({'guard engaged' if engaged else 'no guard'})"
            assert run["group"].split(":")[0] == name and run["correct"], (where, run)
            contexts = [a["context"] for a in run["allocations"]]
            assert len(contexts) == 2, (where, run["allocations"])  # the send buffer (cat) and the output (empty)
            assert contexts == [None if engaged else run["group"]] * 2, (where, run["allocations"])
            held_somewhere |= not engaged
    assert held_somewhere, "no configuration showed sglang's own DCP contexts (the control)"
    pinned_racy = result["ranks"]["0"]["status"]["on"]["race_guard"]["engaged"]
    assert engaged_somewhere is pinned_racy


@pytest.mark.parametrize("release", PROOF_RELEASES)
def test_send_staging_where_it_engages_patches_every_target_or_says_why(release):
    """SGLANG_CP_SYMM_SEND=1 with a policy that stages (NCCL 2.27.7 given): every target of the register is
    "patched" with send (and every call of it ran, above). A "skipped" is a failure here: the register lists no
    target that staging cannot cover, so a skip means the rewrite or the patcher refused a real target."""
    config = "on+send@2.27.7" if "on+send@2.27.7" in [c["name"] for c in proof(release)["configs"]] else "on+send"
    got = states(release, config)
    assert register(release), f"sglang {release}: no target in the register"
    for name in register(release):
        assert name in got and moves(got[name], "send"), (name, got.get(name), config)


@pytest.mark.parametrize("release", PROOF_RELEASES)
def test_every_line_of_every_target_ran_unpatched_and_patched(release):
    """Every line of code of every target function, original and rewritten, ran in some call on some rank, in every
    configuration, except statements that only raise on invalid input."""
    from sglang_cp_symm.tools.rehearsal import coverage

    missing = []
    for config, targets in coverage(proof(release)).items():
        for target, info in targets.items():
            if info["missing"]:
                missing.append(f"{config} {target}: " + "; ".join(f"{line}: {text}" for line, text in info["missing"]))
    assert not missing, "\n".join(missing)
    rewritten = {t for c, ts in coverage(proof(release)).items() for t, i in ts.items() if i["rewritten"]}
    on_send = states(release, [c["name"] for c in proof(release)["configs"]][-1])
    assert rewritten >= {n for n, s in on_send.items() if s["state"] == "patched" and not n.startswith("pool.")}


def test_a_module_that_fails_to_import_is_reported_with_its_error_and_nothing_runs():
    """sglang 0.5.17 (the first proof release that pins xgrammar) with xgrammar hidden (ci/releases.txt pins it for this reason): the rehearsal names the
    module and the import error instead of failing later, and the demo exits 1 with that line."""
    needing = [r for r in PROOF_RELEASES if "xgrammar" in " ".join(line for line in _pins(r))]
    if not needing:
        pytest.skip("no proof release needs xgrammar (ci/releases.txt)")
    release = needing[0]
    hide = """
        import sys, importlib.abc
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "xgrammar" or name.startswith("xgrammar."):
                    raise ModuleNotFoundError("No module named 'xgrammar'", name="xgrammar")
        sys.meta_path.insert(0, Hide())
    """
    result = run_python(release, hide + """
        import json
        from sglang_cp_symm.tools import rehearsal
        if __name__ == "__main__":
            print(json.dumps(rehearsal.prove()))
    """, fresh=False)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "ranks" not in report
    assert "failed to import: ModuleNotFoundError: No module named 'xgrammar'" in report["error"]
    assert report["imports"]["sglang.srt.layers.cp.zigzag"].startswith("failed to import")
    demo = run_python(release, hide + """
        import sys
        from sglang_cp_symm.tools.cli import main
        if __name__ == "__main__":
            sys.exit(main(["demo"]))
    """, fresh=False)
    assert demo.returncode == 1
    assert "failed to import: ModuleNotFoundError: No module named 'xgrammar'" in demo.stdout
    assert "ZeroDivisionError" not in demo.stdout + demo.stderr
