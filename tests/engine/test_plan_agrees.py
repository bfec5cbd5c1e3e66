"""The doctor agrees with the engine, on real releases, in fresh processes (issue 20's property test).

For each release of the set, two fresh interpreters run the same configurations:

- the engine side imports the release's register modules as a scheduler does, then for each configuration
  applies the plugin (``sglang_cp_symm.patch``, the path the entry point takes), reads ``status()`` and takes
  it back (``unpatch``);
- the doctor side never imports sglang and builds ``doctor``'s report for the same configuration.

The configurations cross every NCCL line the policy distinguishes (the engine's library read through the
libnccl stand-in, a library that cannot be opened, and versions given as ``patch(nccl=)`` / ``doctor --nccl``),
every switch combination that changes a decision (``SEND``, ``ALLOW_NCCL_RACE``), and each NCCL setting the plan
reads (``NCCL_WIN_ENABLE=0``, ``NCCL_SYM_NOWIN_ENABLE=1``, ``NCCL_SYM_KERNEL``, ``NCCL_ALGO``) on every NCCL line. For every target the doctor's verdict (state,
output in window, send in window, symmetric kernel) must equal what the engine reports after applying.
Only the GPU is missing here: both sides assume sm90+, as the engine does until CUDA is up.

Both sides run in processes forked from the release's fork server (tests/forkserver.py), where torch is imported
already: the engine imports it before it reads NCCL, and the doctor imports it itself before it opens the library
(the doctor in a fresh interpreter reads the same library in tests/tools/test_doctor.py and tests/test_bootstrap.py).
"""

from __future__ import annotations

import itertools
import json

import pytest

from conftest import NCCL_STUB, PROOF_RELEASES, last_line, run_python

NCCLS = ["library", "unreadable", "2.27.7", "2.28.9", "2.29.7", "2.30.7", "2.32.6"]
SWITCHES = [(send, race) for send, race in itertools.product((False, True), repeat=2)]
NCCL_SETTINGS = [{"NCCL_WIN_ENABLE": "0"}, {"NCCL_SYM_NOWIN_ENABLE": "1"}, {"NCCL_SYM_KERNEL": "AllGatherLL"},
                 {"NCCL_ALGO": "Ring"}]
#: every NCCL line with every switch combination, and every NCCL line with each NCCL setting (switches at their
#: defaults, and with the race accepted, where a setting meets the guard)
CONFIGS = ([dict(nccl=n, send=s, race=r, env={}) for n, (s, r) in itertools.product(NCCLS, SWITCHES)]
           + [dict(nccl=n, send=False, race=r, env=e) for n, e, r in itertools.product(NCCLS, NCCL_SETTINGS,
                                                                                       (False, True))])

COMMON = r"""
import json, os
CONFIGS = json.loads(%(configs)r)
MISSING = "/nonexistent/libnccl.so.2"
def environment(config):
    for name in ("NCCL_WIN_ENABLE", "NCCL_SYM_NOWIN_ENABLE", "NCCL_SYM_KERNEL", "NCCL_ALGO", "SGLANG_CP_SYMM_SEND",
                 "SGLANG_CP_SYMM_ALLOW_NCCL_RACE"):
        os.environ.pop(name, None)
    os.environ.update(config["env"])
    os.environ["SGLANG_CP_SYMM"] = "1"
    os.environ["SGLANG_CP_SYMM_SEND"] = "1" if config["send"] else "0"
    os.environ["SGLANG_CP_SYMM_ALLOW_NCCL_RACE"] = "1" if config["race"] else "0"
    os.environ["SGLANG_NCCL_SO_PATH"] = MISSING if config["nccl"] == "unreadable" else %(stub)r
    return None if config["nccl"] in ("library", "unreadable") else config["nccl"]
"""

ENGINE = COMMON + r"""
import torch  # the engine has torch before the plugin reads NCCL
import sglang_cp_symm
from sglang_cp_symm.engine.settings import read_settings
from sglang_cp_symm.tools.cli import import_register_modules
out = []
for config in CONFIGS:
    given = environment(config)
    sglang_cp_symm.patch(settings=read_settings(), nccl=given)
    if not out:
        imports = import_register_modules()
        assert all(v in ("imported", "not present") for v in imports.values()), imports
    status = sglang_cp_symm.status()
    out.append({name: t.get("verdict") for name, t in status["targets"].items() if name != "race_guard"})
    sglang_cp_symm.unpatch()
print(json.dumps(out))
"""

DOCTOR = COMMON + r"""
import sys
from sglang_cp_symm.tools.doctor import build_report
out = []
for config in CONFIGS:
    given = environment(config)
    report = build_report(given)
    entries = {name: {k: t[k] for k in ("state", "output_in_window", "send_in_window", "kernel")}
               for name, t in report["targets"].items()}
    if report.get("pool_fix"):
        entries["pool.attention_cp_registration"] = {"state": report["pool_fix"]["state"]}
    out.append(entries)
assert "sglang.srt.layers" not in " ".join(sys.modules), "the doctor imported the engine"
print(json.dumps(out))
"""


@pytest.mark.release
@pytest.mark.parametrize("release", PROOF_RELEASES)
def test_the_doctor_says_what_the_engine_does(release):
    values = {"configs": json.dumps(CONFIGS), "stub": str(NCCL_STUB)}
    engine = json.loads(last_line(run_python(release, ENGINE % values, timeout=600, fresh=False)))
    doctor = json.loads(last_line(run_python(release, DOCTOR % values, timeout=600, fresh=False)))
    compared = 0
    for config, seen, told in zip(CONFIGS, engine, doctor):
        for name, said in told.items():
            did = seen.get(name)
            assert did is not None, f"{release} {config}: the engine reports no {name} ({sorted(seen)})"
            for key, value in said.items():
                assert did[key] == value, (f"sglang {release}, {config}: {name}.{key}: the doctor says {value!r}, "
                                           f"the engine reports {did[key]!r}")
                compared += 1
        assert set(seen) <= set(told) | {"pool.attention_cp_registration"}, (release, config, sorted(seen))
    assert len(engine) == len(doctor) == len(CONFIGS) and compared >= len(CONFIGS) * 4, compared
