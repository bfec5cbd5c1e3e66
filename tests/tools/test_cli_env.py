"""Stage B: every command of the command line under the user's own switches, on real sglang releases (issue 20, item 5).

A user who follows README exports ``SGLANG_CP_SYMM=1`` (and maybe ``_STRICT``, ``_SEND``, ...) for the server and
then runs ``sglang-cp-symm status``, ``doctor``, ``demo`` or ``demo-warmup`` in the same shell. Each command must
then end without a traceback, with the exit status it documents, and say what is true: ``status`` and ``doctor``
report the switches as the engine parses them (``settings.read_settings``), bad values by name with at most a
short prefix of the value; the demos set the plugin themselves and say once that they set the user's switches aside.

Real here: the releases (``.envs/sglang-X``), the package as pip installed it (its ``.pth`` line reads the
environment at interpreter start and arms the bootstrap), fresh interpreters. Stood in, as in every stage B test:
the NCCL library (``tests/stubs/libnccl_stub.c`` answering as the release's pinned NCCL: no NCCL exists on a CPU
machine).

Why this sample covers the class. The environment reaches a command in three ways only: (1) the ``.pth`` line at
interpreter start, which arms the bootstrap for any value but an "off" one; (2) the bootstrap (0.5.6-0.5.10) or
sglang's ``load_plugins`` (0.5.11+), which apply the plugin from the environment at the first engine import; (3)
``read_settings`` wherever a command or the engine reads the switches. The values fall into five classes that
take different paths through those three: everything on and valid with strict (``ALL_ON``: the apply path with
every feature); strict alone (``STRICT``); an unknown value of the master switch (``BAD_ENABLE``: the ``.pth`` arms,
the settings say off); every other switch bad at once, strict among them so that nothing refuses
(``ALL_BAD``: ``read_settings`` parses each variable on its own, so one process shows each bad value's own line,
including a long value and one with a control character, which must be echoed only as a short clean prefix); and
strict with a bad value (``STRICT_BAD``: the refusal path, with full-width digits, which ``str.isdigit`` accepts).
The releases span the shapes of (2): 0.5.6 (NSA gathers on the attention-TP group, bootstrap), 0.5.10 (the last
release the bootstrap applies, ``cp_utils`` gathers; the demo's traceback of the bug), 0.5.11 (the first with the
entry point, the pool fix, a racy pinned NCCL) and 0.5.23 (everything upstream, ``layers/cp``).

- ``status``, ``status --json``, ``doctor``, ``doctor --json``, ``doctor --check`` and ``demo-warmup`` without
  sglang arguments never import the engine (asserted: no module of ``bootstrap.ENGINE_MODULES`` is imported, the
  bootstrap never fired), so they meet the environment through (1) and (3) only. One interpreter per release,
  started with ``ALL_ON`` (the ``.pth`` armed), runs them under each class in turn, swapping ``os.environ``
  between classes, through ``cli.main`` as ``python -m sglang_cp_symm`` calls it: every class on every release.
- ``status --apply``, ``demo`` and ``demo-warmup -- <args>`` import the engine, so each runs as
  ``python -m sglang_cp_symm`` in its own process with the class's environment (forked from the release's fork
  server, whose child runs the ``.pth`` line under that environment as a start would: tests/forkserver.py): ``status --apply``
  under ``ALL_ON``, ``STRICT_BAD`` and ``BAD_ENABLE`` on every release, ``STRICT`` on 0.5.11 (guarded: strict must
  not refuse) and ``ALL_BAD`` on 0.5.10 (bootstrap and command line both activate: each warning once); ``demo``
  under ``STRICT`` on 0.5.6, 0.5.10 and 0.5.23 and ``demo --send --as-nccl 2.27.7`` under ``ALL_ON`` plus a bad
  value on 0.5.11; ``demo-warmup`` on 0.5.23 (the releases whose warm-up modules import on this machine are
  0.5.11+) under switches that contradict what it must run with. ``demo`` runs 2 ranks (``--world 2``): the
  world size does not meet the environment, and the parent's imports dominate its cost either way.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from conftest import ROOT, run_python

pytestmark = pytest.mark.release

RELEASES = ["0.5.6", "0.5.10", "0.5.11", "0.5.23"]
REPORT_DIR = os.path.join(tempfile.gettempdir(), "cp-symm-cli-env-reports")
LONG = "x" * 200
ALL_ON = {"SGLANG_CP_SYMM": "1", "SGLANG_CP_SYMM_STRICT": "true", "SGLANG_CP_SYMM_SEND": "yes",
          "SGLANG_CP_SYMM_ALLOW_NCCL_RACE": "on", "SGLANG_CP_SYMM_WARMUP": "1", "SGLANG_CP_SYMM_WARMUP_TOKENS": "4096",
          "SGLANG_CP_SYMM_WARMUP_TIMEOUT": "900", "SGLANG_CP_SYMM_WATCHDOG": "ON",
          "SGLANG_CP_SYMM_REPORT_DIR": REPORT_DIR}
STRICT = {"SGLANG_CP_SYMM": "1", "SGLANG_CP_SYMM_STRICT": "1"}
BAD_ENABLE = {"SGLANG_CP_SYMM": "maybe"}
ALL_BAD = {"SGLANG_CP_SYMM": "1", "SGLANG_CP_SYMM_STRICT": "perhaps", "SGLANG_CP_SYMM_SEND": "2",
           "SGLANG_CP_SYMM_ALLOW_NCCL_RACE": "sure\x1b[31m", "SGLANG_CP_SYMM_WARMUP": "sometimes",
           "SGLANG_CP_SYMM_WARMUP_TOKENS": "-5", "SGLANG_CP_SYMM_WARMUP_TIMEOUT": "1e9",
           "SGLANG_CP_SYMM_WATCHDOG": LONG, "SGLANG_CP_SYMM_REPORT_DIR": str(ROOT / "pyproject.toml")}
STRICT_BAD = {"SGLANG_CP_SYMM": "1", "SGLANG_CP_SYMM_STRICT": "1", "SGLANG_CP_SYMM_WARMUP_TOKENS": "\uff14\uff10\uff19\uff16"}
CLASSES = {"ALL_ON": ALL_ON, "STRICT": STRICT, "BAD_ENABLE": BAD_ENABLE, "ALL_BAD": ALL_BAD, "STRICT_BAD": STRICT_BAD}
#: The commands that never import the engine (asserted in the child).
LIGHT = [["status"], ["status", "--json"], ["doctor"], ["doctor", "--json"], ["doctor", "--check"], ["demo-warmup"]]
#: doctor --check with ALL_ON and the pinned NCCL: 0 where the plugin patches and a symmetric kernel engages (2.27.5
#: with send staging; 2.28.9 with the race accepted), 1 on 0.5.23 (everything upstream: the plugin patches nothing).
CHECK_ALL_ON = {"0.5.6": 0, "0.5.10": 0, "0.5.11": 0, "0.5.23": 1}


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text[-3000:]


def problems_named(text: str, env: dict) -> None:
    """Each bad variable named in its own problem, its value echoed at most as a short, clean prefix."""
    from sglang_cp_symm.engine.settings import read_settings

    for problem in read_settings(env).problems:
        assert problem in text, (problem, text[-3000:])
    assert LONG[:61] not in text and "\x1b" not in text


# -- status, doctor and demo-warmup's refusal: one interpreter per release, every class ----------------------------

_LIGHT_RUNS: dict = {}

LIGHT_CHILD = """
import contextlib, io, json, os, sys, traceback
from sglang_cp_symm.bootstrap import ENGINE_MODULES, EngineImportTrigger
from sglang_cp_symm.tools.cli import main

def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as exc:  # as the interpreter ends sys.exit(main()): a message is printed, status 1
            rc = exc.code if exc.code is None or isinstance(exc.code, int) else 1
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            rc = "raised"
    return {"rc": 0 if rc is None else rc, "out": out.getvalue(), "err": err.getvalue()}

results = {}
for name, env in json.loads(sys.argv[1]).items():
    for var in [v for v in os.environ if v == "SGLANG_CP_SYMM" or v.startswith("SGLANG_CP_SYMM_")]:
        del os.environ[var]
    os.environ.update(env)
    results[name] = {" ".join(argv): run(argv) for argv in json.loads(sys.argv[2])}
results["engine imported"] = sorted(m for m in ENGINE_MODULES if m in sys.modules)
results["bootstrap armed"] = any(isinstance(f, EngineImportTrigger) for f in sys.meta_path)
results["bootstrap fired"] = any(isinstance(f, EngineImportTrigger) and f.fired for f in sys.meta_path)
print(json.dumps(results))
"""


def light(release: str) -> dict:
    if release not in _LIGHT_RUNS:
        code = ("import sys; sys.argv[1:] = %r\n" % [json.dumps(CLASSES), json.dumps(LIGHT)]) + LIGHT_CHILD
        result = run_python(release, code, env=ALL_ON)
        no_traceback(result.stderr)
        assert result.returncode == 0, result.stderr[-3000:]
        _LIGHT_RUNS[release] = json.loads(result.stdout.strip().splitlines()[-1])
    return _LIGHT_RUNS[release]


@pytest.mark.parametrize("release", RELEASES)
def test_the_light_commands_never_reach_the_engine(release):
    runs = light(release)
    assert runs["bootstrap armed"] and not runs["bootstrap fired"] and runs["engine imported"] == []


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", list(CLASSES))
def test_status_and_doctor_tell_the_switches_as_they_are(release, name):
    from sglang_cp_symm.engine.report import mode_of
    from sglang_cp_symm.engine.settings import read_settings
    from sglang_cp_symm.tools.cli import switches_text

    env = CLASSES[name]
    settings = read_settings(env)
    runs = light(release)[name]
    for command, run in runs.items():
        no_traceback(run["out"], run["err"])
    mode = mode_of(settings)
    assert mode == {"ALL_ON": "strict", "STRICT": "strict", "BAD_ENABLE": "off", "ALL_BAD": "on",
                    "STRICT_BAD": "strict"}[name]

    status = runs["status"]
    assert status["rc"] == 0
    outcome = "off" if mode == "off" else "not applied in this process"
    assert status["out"].startswith(f"sglang: {release}   mode: {mode}   outcome: {outcome}\n"), status["out"]
    assert f"  switches: {switches_text(settings)}\n" in status["out"]
    problems_named(status["out"], env)
    assert status["out"].count("  problem: ") == len(settings.problems)

    report = json.loads(runs["status --json"]["out"])
    assert runs["status --json"]["rc"] == 0
    assert report["settings"] == settings.describe() and report["mode"] == mode and report["sglang"] == release

    doctor = runs["doctor"]
    assert doctor["rc"] == 0 and f"  sglang      {release}\n" in doctor["out"]
    words = {True: "on", False: "off"}
    assert (f"  switches    SGLANG_CP_SYMM={words[settings.enabled]}, STRICT={words[settings.strict]}, "
            f"SEND={words[settings.send]}, ALLOW_NCCL_RACE={words[settings.allow_nccl_race]}, ") in doctor["out"]
    problems_named(doctor["out"], env)
    doctor_json = json.loads(runs["doctor --json"]["out"])
    assert runs["doctor --json"]["rc"] == 0 and doctor_json["settings"] == settings.describe()
    # --check: 1 for a bad switch (README), else whether the plugin patches and a symmetric kernel engages
    expected = 1 if settings.problems else CHECK_ALL_ON.get(release) if name == "ALL_ON" else None
    if expected is not None:
        assert runs["doctor --check"]["rc"] == expected, runs["doctor --check"]
    else:
        assert runs["doctor --check"]["rc"] in (0, 1)
    assert runs["doctor --check"]["out"] == doctor["out"]

    refusal = runs["demo-warmup"]  # no sglang arguments: one line, status 2, after setting the switches aside
    assert refusal["rc"] == 2
    lines = refusal["out"].splitlines()
    assert lines[0].startswith(f"sglang-cp-symm demo-warmup: set aside {', '.join(sorted(env))} from")
    assert lines[1].startswith("give the arguments of sglang serve after --") and len(lines) == 2


# -- status --apply: the engine imported in the process the switches started ------------------------------------------


def cli(release: str, argv: list, env: dict, timeout: float = 600):
    """``python -m sglang_cp_symm ARGV`` in a process of its own with ``env`` (and the release's pinned NCCL): forked
    from the release's fork server, which runs the ``.pth`` line under ``env`` as an interpreter's start does
    (tests/forkserver.py); the engine, which these commands import, imports torch before the plugin reads NCCL."""
    code = (f"import runpy, sys; sys.argv = ['sglang-cp-symm'] + {argv!r}\n"
            "runpy.run_module('sglang_cp_symm', run_name='__main__', alter_sys=True)\n")
    result = run_python(release, code, env=env, timeout=timeout, fresh=False)
    no_traceback(result.stdout, result.stderr)
    return result


APPLY = [(release, "ALL_ON") for release in RELEASES] + [(release, "STRICT_BAD") for release in RELEASES] + [
    (release, "BAD_ENABLE") for release in RELEASES] + [("0.5.11", "STRICT"), ("0.5.10", "ALL_BAD")]


@pytest.mark.parametrize("release,name", APPLY)
def test_status_apply_under_the_users_switches(release, name):
    from sglang_cp_symm.engine.settings import read_settings
    from sglang_cp_symm.releases import Release
    from sglang_cp_symm.targets import targets_for

    env = CLASSES[name]
    settings = read_settings(env)
    result = cli(release, ["status", "--apply"], env)
    if name == "STRICT_BAD":  # strict refuses the bad value: one line on stderr naming it, status 2
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.strip().splitlines() == [
            f"sglang-cp-symm strict mode: {settings.problems[0]} (unset SGLANG_CP_SYMM_STRICT to start anyway)"]
        return
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    if name == "BAD_ENABLE":
        assert out.startswith(f"sglang: {release}   mode: off   outcome: off\n")
        assert "so --apply applied nothing" in out and "SGLANG_CP_SYMM='maybe' is not understood" in result.stderr
        return
    mode = "strict" if settings.strict else "on"
    assert out.startswith(f"sglang: {release}   mode: {mode}   outcome: "), out
    assert "failed to import" not in out and "skipped" not in out
    for target in targets_for(Release.parse(release)):
        assert f"  {target.name:<34} " in out, (target.name, out)
    for problem in settings.problems:  # each warning once, though the bootstrap activates too on 0.5.6-0.5.10
        assert result.stderr.count(problem) == 1, (problem, result.stderr[-3000:])
    if name == "ALL_ON":  # send staging and the race opt-in as the environment asks
        expected = {"0.5.6": "  nsa.reorganized_tp                 patched (output+send)",
                    "0.5.10": "  cp_utils.reorganized_kv_cache      patched (output+send)",
                    "0.5.11": "  cp_utils.reorganized_kv_cache      patched (output+send)",
                    "0.5.23": "  cp.zigzag                          upstream"}[release]  # 2.30.7: nothing to stage
        assert expected in out, out
    if name == "STRICT":  # the pinned 2.28.9 races: guarded, which strict mode does not turn into a refusal
        assert "outcome: guarded: " in out


# -- the demos: they set the user's switches aside ----------------------------------------------------------------


@pytest.mark.parametrize("release,argv,name", [
    ("0.5.6", ["demo", "--world", "2"], "STRICT"),
    ("0.5.10", ["demo", "--world", "2"], "STRICT"),
    ("0.5.23", ["demo", "--world", "2"], "STRICT"),
    ("0.5.11", ["demo", "--world", "2", "--send", "--as-nccl", "2.27.7"], "ALL_ON+bad"),
])
def test_the_demo_builds_its_own_configurations(release, argv, name):
    env = dict(ALL_ON, SGLANG_CP_SYMM_WARMUP_TOKENS="abc") if name == "ALL_ON+bad" else CLASSES[name]
    result = cli(release, argv, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    said = f"sglang-cp-symm demo: set aside {', '.join(sorted(env))} from this process's environment; "
    assert out.startswith(said) and out.count("set aside") == 1, out[:600]
    # nothing was applied from the environment: neither in the parent (the bug: the bootstrap applied it there on
    # 0.5.6-0.5.10, with the NCCL unknown) nor in a rank (strict with a bad value would have stopped it)
    assert "the NCCL the engine loads is unknown" not in result.stderr and "strict mode" not in out + result.stderr
    assert "results bit-identical to sglang's own and to the full tensor: yes" in out
    assert "every line of every target ran, original and patched, in every configuration: yes" in out
    configs = [line.split()[0] for line in out.split("configurations:\n", 1)[1].split("\n\n", 1)[0].splitlines()
               if not line.startswith("   ")]
    assert configs == ["off", "on", "on+send"], out
    if "--as-nccl" in argv:  # SEND=1 in the environment did not reach the "on" configuration
        on = out.split("\n  on ", 1)[1].split("\n  on+send", 1)[0]
        assert "NCCL 2.27.7 (given)" in on and "output+send" not in on and "patched (output)" in on, on


def test_demo_warmup_runs_with_its_own_settings():
    """On 0.5.23 (0.5.6-0.5.10 need the CUDA-only sgl_kernel for sglang's warm-up modules here): the user's switches
    say plugin off, strict, warm-up off, 4096 tokens and a bad watchdog value; the demo runs the plugin's defaults."""
    env = {"SGLANG_CP_SYMM": "0", "SGLANG_CP_SYMM_STRICT": "1", "SGLANG_CP_SYMM_WARMUP": "0",
           "SGLANG_CP_SYMM_WARMUP_TOKENS": "4096", "SGLANG_CP_SYMM_WATCHDOG": "perhaps"}
    result = cli("0.5.23", ["demo-warmup", "--", "--model-path", "models/qwen3-30b-a3b", "--device", "cpu",
                            "--skip-tokenizer-init", "--tp", "2", "--attn-cp-size", "2", "--enable-prefill-cp",
                            "--cp-strategy", "zigzag", "--enable-symm-mem", "--chunked-prefill-size", "8192"], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"sglang-cp-symm demo-warmup: set aside {', '.join(sorted(env))} from")
    assert "it runs the plugin on, every other switch at its default" in lines[0]
    assert "strict mode" not in result.stdout + result.stderr and "perhaps" not in result.stdout + result.stderr
    assert any(line.startswith("DP rank 0: prompts of 8192, ") for line in lines), result.stdout
    assert lines[-1].startswith("result: {'ran': True")
