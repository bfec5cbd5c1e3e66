"""Invisible when off, harmless when on: what the installed ``.pth`` does to every interpreter of the image.

Each check starts fresh interpreters of ``.venv``, where ``ci/envs.sh`` installed the
package as ``pip install`` does (the ``.pth`` in site-packages, the entry point in
its metadata), with sglang 0.5.10 (no plugin framework: the ``.pth`` path) or 0.5.11
(sglang's ``load_plugins()`` calls the entry point) importable. Nothing is faked
but the NCCL library (``tests/stubs/libnccl_stub.c``: no NCCL exists on a CPU
machine) and, where a test says so, a broken wrapt put in front of the real one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT, last_line, nccl, run_python

pytestmark = pytest.mark.release

CP_UTILS = "sglang.srt.layers.utils.cp_utils"
KV = "cp_all_gather_reorganized_into_tensor_kv_cache"
#: On, with an NCCL where nothing races (2.30.7): what is patched then is the bootstrap's and the loader's doing alone
#: (on 0.5.11's pinned 2.28.9 the race guard holds the gathers instead: tests/engine/test_race_guard.py).
ON = {"SGLANG_CP_SYMM": "1", **nccl("2.30.7")}
#: On, with the NCCL the release pins (run_python's default), for the tests of which NCCL is read.
PINNED = {"SGLANG_CP_SYMM": "1"}
OURS = "sorted(m for m in sys.modules if m.startswith('sglang_cp_symm') or m == 'wrapt')"


def test_the_pth_is_installed_where_pip_puts_it():
    site = Path(sysconfig.get_paths()["purelib"])
    line = (site / "sglang_cp_symm_bootstrap.pth").read_text().strip()
    assert line.startswith("import ") and "\n" not in line and len(line) < 160
    assert "SGLANG_CP_SYMM" in line and "sglang_cp_symm.bootstrap" in line


@pytest.mark.parametrize("value", [None, "", "0", "off", "No"])
def test_off_imports_nothing_of_the_package(value):
    env = {} if value is None else {"SGLANG_CP_SYMM": value}
    assert last_line(run_python(None, f"import sys; print({OURS})", env=env)) == "[]"


def test_on_imports_only_the_bootstrap_until_an_engine_module_is_imported():
    out = last_line(run_python("0.5.10", f"import sys, json, sglang; print({OURS}, 'torch' in sys.modules)", env=ON))
    assert out == "['sglang_cp_symm', 'sglang_cp_symm.bootstrap'] False"


def test_on_the_first_engine_module_applies_the_plugin_on_0_5_10():
    out = json.loads(last_line(run_python("0.5.10", f"""
        import json, wrapt, {CP_UTILS} as m, sglang_cp_symm as s
        print(json.dumps([hasattr(m.{KV}, '__sglang_cp_symm_rewritten__'), s.status()["targets"]["cp_utils.reorganized_kv_cache"]["state"]]))
    """, env=ON)))
    assert out == [True, "patched"]


def test_on_0_5_11_the_bootstrap_leaves_it_to_sglangs_plugin_loader():
    out = json.loads(last_line(run_python("0.5.11", f"""
        import json, wrapt, {CP_UTILS} as m, sglang_cp_symm as s
        before = hasattr(m.{KV}, '__sglang_cp_symm_rewritten__')
        from sglang.srt.plugins import load_plugins
        load_plugins()
        print(json.dumps([before, hasattr(m.{KV}, '__sglang_cp_symm_rewritten__')]))
    """, env=ON)))
    assert out == [False, True]


def test_the_bootstrap_reaches_spawned_children_on_0_5_10(tmp_path):
    """0.5.10 has no plugin framework: the installed .pth must patch a spawned child by itself."""
    (tmp_path / "child_probe.py").write_text(
        "def child(q):\n"
        f"    import wrapt, {CP_UTILS} as m\n"
        f"    q.put(hasattr(m.{KV}, '__sglang_cp_symm_rewritten__'))\n"
    )
    code = """
        import multiprocessing as mp, sys
        sys.path.insert(0, %r)
        import child_probe
        ctx = mp.get_context("spawn"); q = ctx.Queue()
        proc = ctx.Process(target=child_probe.child, args=(q,)); proc.start()
        print(q.get(timeout=120)); proc.join()
    """ % str(tmp_path)
    assert last_line(run_python("0.5.10", code, env=ON)) == "True"
    assert last_line(run_python("0.5.10", code, env={})) == "False"


def broken_wrapt(tmp_path: Path) -> str:
    """A ``wrapt`` that fails to import, put in front of the real one: a partial or broken install."""
    (tmp_path / "wrapt").mkdir()
    (tmp_path / "wrapt" / "__init__.py").write_text("raise ImportError('wrapt is broken in this image')\n")
    return str(tmp_path)


@pytest.mark.parametrize("release", ["0.5.10", "0.5.11"])
def test_a_broken_wrapt_is_one_warning_and_the_engine_imports_unchanged(release, tmp_path):
    code = f"""
        import {CP_UTILS} as m
        from sglang.srt.plugins import load_plugins
        load_plugins()
        print("imported", m.{KV}.__class__.__name__)
    """ if release == "0.5.11" else f"import {CP_UTILS} as m; print('imported', m.{KV}.__class__.__name__)"
    result = run_python(release, code, env={**ON, "PYTHONPATH_PREPEND": broken_wrapt(tmp_path)})
    assert last_line(result) == "imported function"
    lines = [l for l in result.stderr.splitlines() if "sglang-cp-symm" in l]
    assert len(lines) == 1 and "wrapt is broken" in lines[0] and "Traceback" not in result.stderr


def test_a_broken_wrapt_never_reaches_an_unrelated_interpreter(tmp_path):
    result = run_python(None, "print('fine')", env={**ON, "PYTHONPATH_PREPEND": broken_wrapt(tmp_path)})
    assert result.stdout.strip() == "fine" and result.stderr == ""


STRICT_BAD = {"SGLANG_CP_SYMM": "maybe", "SGLANG_CP_SYMM_STRICT": "1"}


def test_strict_mode_with_a_bad_value_leaves_pip_and_python_working():
    for argv in (["-m", "pip", "--version"], ["-c", "print('python starts')"]):
        result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=strict_env(STRICT_BAD))
        assert result.returncode == 0 and "Traceback" not in result.stderr and "Fatal" not in result.stderr


def strict_env(extra: dict) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_")}
    return {**env, **extra}


@pytest.mark.parametrize("release", ["0.5.10", "0.5.11"])
def test_strict_mode_stops_the_engine_with_one_line(release):
    code = ("from sglang.srt.plugins import load_plugins; load_plugins(); print('started')" if release == "0.5.11"
            else f"import {CP_UTILS}; print('started')")
    result = run_python(release, code, env=STRICT_BAD)
    assert result.returncode == 1 and "started" not in result.stdout
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if "sglang-cp-symm strict mode" in l]
    assert len(lines) == 1 and "SGLANG_CP_SYMM='maybe'" in lines[0]
    assert not [l for l in result.stderr.splitlines() if "sglang-cp-symm" in l and l not in lines]


def test_a_bad_value_is_one_warning_per_engine_process_and_means_off():
    result = run_python("0.5.10", f"""
        import wrapt, {CP_UTILS} as m
        import sglang.srt.server_args
        print(hasattr(m.{KV}, '__sglang_cp_symm_rewritten__'))
    """, env={"SGLANG_CP_SYMM": "maybe"})
    assert last_line(result) == "False"
    assert len([l for l in result.stderr.splitlines() if "SGLANG_CP_SYMM='maybe'" in l]) == 1


@pytest.fixture(scope="module")
def release_0_5_5(tmp_path_factory):
    """The real sglang 0.5.5 wheel (no dependencies), an unsupported release before the plugin framework."""
    wheels = sorted((ROOT / ".cache" / "wheels").glob("sglang-0.5.5-*.whl"))
    if not wheels:
        pytest.skip("no sglang 0.5.5 wheel in .cache/wheels (ci/fetch-wheels.sh fetches it)")
    target = tmp_path_factory.mktemp("sglang-0.5.5")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheels[0])],
                   check=True, capture_output=True)
    return str(target)


def test_an_unsupported_release_is_one_warning_and_strict_stops_only_the_engine(release_0_5_5):
    find = "import importlib.util; importlib.util.find_spec('sglang.srt.server_args'); print('went on')"
    result = run_python(None, find, env={**ON, "PYTHONPATH_PREPEND": release_0_5_5})
    assert last_line(result) == "went on"
    lines = [l for l in result.stderr.splitlines() if "sglang-cp-symm" in l]
    assert len(lines) == 1 and "0.5.5" in lines[0] and "release not in the register" in lines[0]
    strict = run_python(None, find, env={**ON, "SGLANG_CP_SYMM_STRICT": "1", "PYTHONPATH_PREPEND": release_0_5_5})
    assert strict.returncode == 1 and "went on" not in strict.stdout and "Traceback" not in strict.stderr
    assert "sglang-cp-symm strict mode" in strict.stderr and "0.5.5" in strict.stderr
    pip = run_python(None, "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-m', 'pip', '--version']))",
                     env={**ON, "SGLANG_CP_SYMM_STRICT": "1", "PYTHONPATH_PREPEND": release_0_5_5})
    assert pip.returncode == 0


def test_nccl_is_opened_only_after_torch_is_imported():
    """The engine's NCCL is read after its module imported torch, never before (which could load another one)."""
    out = json.loads(last_line(run_python("0.5.10", f"""
        import json, sys
        events = []
        def audit(event, args):
            if event == "import" and args[0] == "torch" and "torch" not in events:
                events.append("torch")
            elif event == "ctypes.dlopen" and "nccl" in str(args[0]):
                events.append("nccl")
        sys.addaudithook(audit)
        import {CP_UTILS}
        import sglang_cp_symm as s
        print(json.dumps([events, s.status()["nccl"]["version"]]))
    """, env=PINNED)))
    events, version = out
    assert "nccl" in events and events.index("torch") < events.index("nccl") and version == "2.27.5"


@pytest.mark.parametrize("nccl_env,expected", [({}, "2.28.9"), ({"SGLANG_NCCL_SO_PATH": ""}, None)])
def test_the_doctor_reads_the_nccl_the_engine_reads(nccl_env, expected):
    """Same resolution function: with SGLANG_NCCL_SO_PATH naming a library (the stub, as 0.5.11's pin) and with
    none (CPU torch: unknown), the engine's status and the doctor name the same NCCL."""
    code = f"""
        import json, subprocess, sys, {CP_UTILS}
        import sglang_cp_symm as s
        from sglang.srt.plugins import load_plugins
        load_plugins()
        engine = s.status()["nccl"]["version"]
        doctor = json.loads(subprocess.run([sys.executable, "-m", "sglang_cp_symm", "doctor", "--json"],
                                           capture_output=True, text=True, check=True).stdout)["nccl"]["loaded"]
        print(json.dumps([engine, doctor]))
    """
    engine, doctor = json.loads(last_line(run_python("0.5.11", code, env={**PINNED, **nccl_env})))
    assert engine == doctor == expected


def test_the_status_line_goes_through_sglangs_logging():
    """Loaded before sglang configures logging (as in a scheduler), the line waits and then appears in
    sglang's own format once ``configure_logger`` ran; the plugin adds no handler of its own."""
    result = run_python("0.5.11", f"""
        import logging, {CP_UTILS}
        from sglang.srt.plugins import load_plugins
        load_plugins()
        assert not logging.getLogger("sglang.cp_symm").handlers
        from types import SimpleNamespace
        from sglang.srt.utils import configure_logger
        configure_logger(SimpleNamespace(log_level="info"), prefix=" TP0")
    """, env=ON)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [l for l in result.stderr.splitlines() if "sglang-cp-symm:" in l]
    assert len(lines) == 1 and lines[0].startswith("[") and " TP0] sglang-cp-symm: applied; sglang 0.5.11" in lines[0]


def test_the_status_line_follows_sglangs_level():
    result = run_python("0.5.11", f"""
        import {CP_UTILS}
        from sglang.srt.plugins import load_plugins
        load_plugins()
        from types import SimpleNamespace
        from sglang.srt.utils import configure_logger
        configure_logger(SimpleNamespace(log_level="warning"))
    """, env=ON)
    assert result.returncode == 0 and "sglang-cp-symm:" not in result.stderr


def run_cli(*argv: str, env: dict, release: str = "0.5.11") -> subprocess.CompletedProcess:
    return run_python(release, "import sys; from sglang_cp_symm.tools.cli import main; sys.exit(main(%r))" % (list(argv),),
                      env=env)


def test_a_bad_switch_means_off_on_the_command_line_too():
    result = run_cli("status", "--apply", "--json", env={"SGLANG_CP_SYMM": "maybe"})
    report = json.loads(result.stdout)
    assert report["mode"] == "off" and report["targets"] == {} and report["sglang"] == "0.5.11"
    assert "applied nothing" in report["note"]


def test_status_names_the_installed_release_without_applying():
    result = run_cli("status", env={})
    assert result.stdout.startswith("sglang: 0.5.11   mode: off")


def test_strict_mode_on_the_command_line_is_one_line_and_status_2():
    result = run_cli("status", "--apply", env=STRICT_BAD)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "sglang-cp-symm strict mode" in result.stderr
