"""Every NCCL input, validated where it enters (issue 20, item 4): codes, library paths, and the versions users type.

Classes, not single values: NCCL's two encodings and their boundaries, signs, sizes and types of the code that
``ncclGetVersion`` writes, every kind of bad ``SGLANG_NCCL_SO_PATH``, and the commands that show them. The pure
decoding runs in-process over whole ranges. The library is opened the real way (``ctypes.CDLL`` and
``ncclGetVersion``, after a real ``import torch``) in one subprocess; the library is the stub of
``tests/stubs/libnccl_stub.c`` because no real NCCL can be installed on this CPU machine (``NCCL_STUB_VERSION`` sets
the code it writes, ``NCCL_STUB_STATUS`` the status it returns), built from this checkout's source for this module
(``.envs/libnccl-stub.so`` is shared and may be older). The commands run as ``python -m sglang_cp_symm`` in
processes of their own on a real release (forked from its fork server where they import the engine).
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap

import pytest

from conftest import STUBS, run_python
from sglang_cp_symm.engine.nccl_policy import (PLAUSIBLE_MINOR, PLAUSIBLE_PATCH, NcclVersion, code_problem,
                                               given_version, implausible, line_for)

#: Every NCCL release tagged in NVIDIA/nccl from v2.3.5-1 to v2.30.7-1 (``git tag``), and what NCCL writes for it.
TAGGED = ["2.3.5", "2.3.7", "2.4.2", "2.4.7", "2.4.8", "2.5.6", "2.5.7", "2.6.4", "2.7.3", "2.7.5", "2.7.6",
          "2.7.8", "2.8.3", "2.8.4", "2.9.6", "2.9.8", "2.9.9", "2.10.3", "2.11.4", "2.12.7", "2.12.10", "2.12.12",
          "2.13.4", "2.14.3", "2.15.1", "2.15.5", "2.16.2", "2.16.5", "2.17.1", "2.18.1", "2.18.3", "2.18.5",
          "2.18.6", "2.19.3", "2.19.4", "2.20.3", "2.20.5", "2.21.5", "2.22.3", "2.23.4", "2.24.3", "2.25.1",
          "2.26.2", "2.26.3", "2.26.5", "2.26.6", "2.27.3", "2.27.5", "2.27.6", "2.27.7", "2.28.3", "2.28.7",
          "2.28.9", "2.29.2", "2.29.3", "2.29.7", "2.30.3", "2.30.4", "2.30.7"]


@pytest.fixture(scope="module")
def stub_library(tmp_path_factory) -> str:
    """tests/stubs/libnccl_stub.c built as ci/envs.sh builds it, into a folder of this module's own."""
    import subprocess

    target = tmp_path_factory.mktemp("stub") / "libnccl-stub.so"
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build tests/stubs/libnccl_stub.c (ci/envs.sh needs it too)")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(target), str(STUBS / "libnccl_stub.c")], check=True)
    return str(target)


def one_line(text: str, limit: int = 400) -> None:
    assert "\n" not in text and "Traceback" not in text and len(text) <= limit, text[:600]


class TestEncodings:
    """NCCL writes X*1000+Y*100+Z up to 2.8 and X*10000+Y*100+Z from 2.9 (v2.30.7-1 src/nccl.h.in:26)."""

    @pytest.mark.parametrize("tag", TAGGED)
    def test_every_tagged_release_decodes_from_the_code_nccl_writes(self, tag):
        major, minor, patch = map(int, tag.split("."))
        code = major * (1000 if minor <= 8 else 10000) + minor * 100 + patch
        assert code_problem(code) == (NcclVersion(major, minor, patch), None)
        assert NcclVersion.parse(code) == NcclVersion.parse(tag) and NcclVersion.parse(tag).code() == code

    @pytest.mark.parametrize("code,version", [(2000, "2.0.0"), (2804, "2.8.4"), (2849, "2.8.49"),
                                              (20900, "2.9.0"), (22809, "2.28.9"), (24949, "2.49.49")])
    def test_boundaries_inside(self, code, version):
        assert code_problem(code) == (NcclVersion.parse(version), None)

    @pytest.mark.parametrize("code,why", [
        (1999, "major 1"), (2850, "patch 50"), (2899, "patch 99"),         # old encoding, just outside
        (2900, "20900"), (9999, "major 9"),                                # 2.9 in the old encoding; 9.9.99
        (10000, "major 1"), (20000, "2000"), (20804, "2804"), (20899, "patch 99"),  # new encoding of a <= 2.8 version
        (24950, "patch 50"), (25000, "minor 50"), (29999, "minor 99"), (30000, "major 3"),
    ])
    def test_boundaries_outside(self, code, why):
        version, problem = code_problem(code)
        assert version is None and why in problem
        one_line(problem)

    def test_every_code_up_to_40000_is_decoded_exactly_or_refused(self):
        accepted = 0
        for code in range(40000):
            version, problem = code_problem(code)
            if version is None:
                assert problem
                continue
            accepted += 1
            assert version.code() == code and implausible(version) is None and line_for(version)
        # 2.0-2.8 with patches 0-49 in the old encoding, 2.9-2.49 with patches 0-49 in the new
        assert accepted == (9 + PLAUSIBLE_MINOR - 8) * (PLAUSIBLE_PATCH + 1)


class TestSigns:
    @pytest.mark.parametrize("code", [-1, -2804, -22809, -(2 ** 31)])
    def test_negative_codes_are_unknown(self, code):
        version, problem = code_problem(code)
        assert version is None and "negative" in problem

    def test_zero_is_unknown_not_an_old_nccl(self):  # 0.0.0 once meant "no windows: guard off"
        assert code_problem(0)[0] is None and "major 0" in code_problem(0)[1]


class TestSizes:
    @pytest.mark.parametrize("code", [2 ** 31 - 1, 2 ** 31, 2 ** 63, 10 ** 30, 10 ** 5000],
                             ids=["2**31-1", "2**31", "2**63", "10**30", "10**5000"])
    def test_huge_codes_are_unknown_and_said_briefly(self, code):
        version, problem = code_problem(code)
        assert version is None
        one_line(problem, 200)


class TestTypes:
    @pytest.mark.parametrize("code", [True, False, 22809.0, "22809", None, b"22809", (2, 28, 9)])
    def test_a_code_is_a_whole_number(self, code):
        version, problem = code_problem(code)
        assert version is None and "whole number" in problem

    @pytest.mark.parametrize("value,expected", [("2.28.9", (2, 28, 9)), (" 2.30.7\n", (2, 30, 7)),
                                                ((2, 28, 9), (2, 28, 9)), ((2, 28, 9, "+cuda13"), (2, 28, 9)),
                                                ([2, 27, 5], (2, 27, 5))])
    def test_parse_reads_what_torch_and_users_write(self, value, expected):
        assert NcclVersion.parse(value) == expected

    @pytest.mark.parametrize("value", [
        "", " ", "2.28", "2.28.9.1", "2.28.9-1", "v2.28.9", "2.28.x", "2..9", "-2.28.9", "2.28.-9",
        "2.\u0662\u0668.9", "\uff12.28.9", "2.28.\u2079",           # Unicode digits: [0-9] only
        "2.28.1234567890", "x" * 10_000, "2.28.9\udcff",             # sizes; an undecodable byte
        (2, 28), (2, -1, 0), (True, 28, 9), (2, 28.0, 9), None, 2.28, b"2.28.9",
    ])
    def test_parse_refuses_with_one_short_line(self, value):
        with pytest.raises(ValueError) as caught:
            NcclVersion.parse(value)
        one_line(str(caught.value), 160)

    @pytest.mark.parametrize("text,ok", [("2.30.7", True), ("2.8.4", True), (f"2.{PLAUSIBLE_MINOR}.0", True),
                                         (f"2.{PLAUSIBLE_MINOR + 1}.0", False), (f"2.28.{PLAUSIBLE_PATCH + 1}", False),
                                         ("0.0.0", False), ("3.0.0", False), ("99.99.99", False)])
    def test_a_version_a_user_names_must_be_a_plausible_release(self, text, ok):
        if ok:
            assert str(given_version(text)) == text
        else:
            with pytest.raises(ValueError, match="not a released NCCL"):
                given_version(text)


# ---------------------------------------------------------------------------------------------------------------
# The library: opened the way sglang's pynccl opens it, in a real process with torch imported.

PROBE = """
import json, os, sys
import torch  # the engine imports torch before its pynccl opens libnccl; engine_nccl insists on it
from sglang_cp_symm.engine.nccl_library import engine_nccl
out = {}
for name, environ in json.loads(os.environ["CASES"]).items():
    os.environ.pop("NCCL_STUB_VERSION", None); os.environ.pop("NCCL_STUB_STATUS", None)
    stub = {k: environ.pop(k) for k in list(environ) if k.startswith("NCCL_STUB_")}
    os.environ.update(stub)  # the stub reads these at each call
    environ = {k: v.replace("<NUL>", "\\x00") for k, v in environ.items()}
    try:
        version, where = engine_nccl(environ)
        out[name] = [None if version is None else str(version), where]
    except BaseException as exc:
        out[name] = ["raised", f"{type(exc).__name__}: {exc}"[:300]]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def library_answers(tmp_path_factory, stub_library):
    """engine_nccl's answer for every case below, from one real process that imported torch."""
    import _ctypes

    folder = tmp_path_factory.mktemp("nccl-paths")
    (folder / "notes.txt").write_text("not a library\n")
    odd = os.fsdecode(bytes(folder) + b"/lib\xff\xfe.so")  # a name that is not UTF-8, as the environment gives it
    shutil.copy(stub_library, os.fsencode(odd))
    stub = stub_library
    cases = {name: {"SGLANG_NCCL_SO_PATH": path, **extra} for name, (path, extra) in {
        "missing": (str(folder / "absent" / "libnccl.so.2"), {}),
        "folder": (str(folder), {}),
        "text file": (str(folder / "notes.txt"), {}),
        "no symbol": (_ctypes.__file__, {}),
        "status 3": (stub, {"NCCL_STUB_STATUS": "3"}),
        "status 99": (stub, {"NCCL_STUB_STATUS": "99"}),
        "status -1": (stub, {"NCCL_STUB_STATUS": "-1"}),
        "blank": ("   ", {}),
        "spaces around": (f" {stub} ", {}),
        "relative": ("lib/libnccl.so.2", {}),
        "dot relative": ("./libnccl.so.2", {}),
        "bare name not found": ("libnccl-absent.so.2", {}),
        "very long": ("/" + "d" * 5000, {}),
        "long, absent": ("/" + "d/" * 1500 + "libnccl.so.2", {}),
        "NUL": ("/tmp/lib<NUL>nccl.so", {}),
        "non-UTF-8, absent": (os.fsdecode(bytes(folder) + b"/\xff/libnccl.so.2"), {}),
        "non-UTF-8, present": (odd, {"NCCL_STUB_VERSION": "22809"}),
        "code -1": (stub, {"NCCL_STUB_VERSION": "-1"}),
        "code 0": (stub, {"NCCL_STUB_VERSION": "0"}),
        "code 2**31-1": (stub, {"NCCL_STUB_VERSION": str(2 ** 31 - 1)}),
        "code -2**31": (stub, {"NCCL_STUB_VERSION": str(-2 ** 31)}),
        "code 20804": (stub, {"NCCL_STUB_VERSION": "20804"}),
        "code 29999": (stub, {"NCCL_STUB_VERSION": "29999"}),
        "code 2804": (stub, {"NCCL_STUB_VERSION": "2804"}),
        "code 22809": (stub, {"NCCL_STUB_VERSION": "22809"}),
        "empty": ("", {}),
    }.items()}
    cases["unset"] = {}
    result = run_python(None, PROBE, env={"CASES": json.dumps(cases)}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


UNKNOWN = {  # case: what the one line must say
    "missing": "does not exist", "folder": "is a folder", "text file": "cannot be opened as a library",
    "no symbol": "no ncclGetVersion", "status 3": "status 3 (ncclInternalError)", "status 99": "status 99",
    "status -1": "status -1", "blank": "spaces", "spaces around": "spaces", "relative": "relative",
    "dot relative": "relative", "bare name not found": "cannot be opened", "very long": "5001 characters",
    "long, absent": "does not exist", "NUL": "NUL", "non-UTF-8, absent": "does not exist",
    "code -1": "wrote -1: a negative", "code 0": "wrote 0: it decodes to 0.0.0",
    "code 2**31-1": "wrote 2147483647: it decodes to 214748.36.47", "code -2**31": "wrote -2147483648",
    "code 20804": "wrote 20804: it decodes to 2.8.4, which NCCL writes as 2804", "code 29999": "minor 99",
}


class TestLibraryPaths:
    @pytest.mark.parametrize("case", sorted(UNKNOWN))
    def test_each_bad_library_is_unknown_with_one_line_naming_it_and_what_to_do(self, library_answers, case):
        version, line = library_answers[case]
        assert version is None, (case, line)
        one_line(line)
        assert UNKNOWN[case] in line and line.startswith("SGLANG_NCCL_SO_PATH=")
        assert "point SGLANG_NCCL_SO_PATH at" in line  # what to do
        assert "d" * 80 not in line and "d/" * 40 not in line  # a short prefix of the path, never all of it

    @pytest.mark.parametrize("case,version", [("code 2804", "2.8.4"), ("code 22809", "2.28.9"),
                                              ("non-UTF-8, present", "2.28.9")])
    def test_a_real_nccl_code_is_read(self, library_answers, case, version):
        assert library_answers[case][0] == version
        one_line(library_answers[case][1])
        library_answers[case][1].encode("utf-8")  # printable as it stands, whatever the path's bytes

    def test_empty_means_unset_as_sglang_reads_it(self, library_answers):
        # pynccl_wrapper.py: `if so_file:`; here torch is a CPU build, so sglang would open no NCCL at all
        assert library_answers["empty"] == library_answers["unset"]
        assert library_answers["empty"][0] is None and "neither CUDA nor ROCm" in library_answers["empty"][1]


# ---------------------------------------------------------------------------------------------------------------
# The commands, in processes of their own on a real release: no traceback, one line where the input was wrong.

RELEASE = "0.5.17"


def command(args, env=None, release=RELEASE, fresh=True):
    code = f"import runpy, sys; sys.argv = ['sglang-cp-symm', *{list(args)!r}]\n" \
           "runpy.run_module('sglang_cp_symm', run_name='__main__')"
    return run_python(release, code, env=env, timeout=180, fresh=fresh)


STUB = "<the stub>"  # replaced by ``stub_library`` where the command runs


def stub(code=None, status=None, path=None) -> dict:
    env = {"SGLANG_NCCL_SO_PATH": path or STUB}
    if code is not None:
        env["NCCL_STUB_VERSION"] = str(code)
    if status is not None:
        env["NCCL_STUB_STATUS"] = str(status)
    return env


def no_traceback(result, codes=(0,)):
    assert result.returncode in codes and "Traceback" not in result.stderr + result.stdout, \
        f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


#: The commands that import torch or sglang (seconds each), run by ``heavy`` and judged below.
HEAVY = {
    "negative code": (["doctor"], stub(code=-1), RELEASE),
    "non-zero status, --check": (["doctor", "--check"], stub(status=3), RELEASE),
    "largest code, --json": (["doctor", "--json"], stub(code=2 ** 31 - 1), RELEASE),
    "code 0, status --apply": (["status", "--apply", "--json"], stub(code=0), "0.5.9"),
}


@pytest.fixture(scope="module")
def heavy(stub_library):
    """Each command of ``HEAVY`` in a process of its own, forked from its release's fork server (tests/forkserver.py),
    as tests/tools/test_doctor.py runs its doctors: what is checked is the command's answer to a bad NCCL input, not
    the interpreter's start (NCCL opened only after torch is tests/test_bootstrap.py's, in a fresh interpreter), and
    a fork costs about 1 s of CPU where a fresh interpreter that imports sglang costs 8."""
    return {name: command(args, {"SGLANG_CP_SYMM": "1", **env,
                                 "SGLANG_NCCL_SO_PATH": env["SGLANG_NCCL_SO_PATH"].replace(STUB, stub_library)},
                          release, fresh=False)
            for name, (args, env, release) in HEAVY.items()}


class TestCommands:
    @pytest.mark.parametrize("name,says", [
        ("negative code", "ncclGetVersion wrote -1: a negative number"),
        ("non-zero status, --check", "status 3 (ncclInternalError)"),
    ])
    def test_doctor_says_why_the_nccl_is_unknown_in_one_line(self, heavy, name, says):
        result = heavy[name]
        no_traceback(result, (0, 1))
        lines = [line for line in result.stdout.splitlines() if says in line]
        assert len(lines) == 1 and "  NCCL        unknown" in result.stdout, result.stdout
        assert "race guard  engaged" in result.stdout  # unknown holds back: the guard holds every CP all-gather

    def test_doctor_json_with_the_largest_code(self, heavy):
        result = heavy["largest code, --json"]
        no_traceback(result)
        nccl = json.loads(result.stdout)["nccl"]
        assert nccl["loaded"] is None and "wrote 2147483647" in nccl["loaded_from"]

    def test_status_apply_holds_back_on_an_implausible_code(self, heavy):
        """The engine itself: code 0 once read as NCCL 0.0.0 (no windows), which turned the race guard off."""
        result = heavy["code 0, status --apply"]
        no_traceback(result)
        status = json.loads(result.stdout[result.stdout.index("{"):])
        assert status["nccl"]["version"] is None and "wrote 0: it decodes to 0.0.0" in status["nccl"]["read_from"]
        assert status["race_guard"]["engaged"] and status["outcome"].startswith("guarded")

    @pytest.mark.parametrize("value", ["2.x", "", "3.0.0", "2.\u0662\u0668.9", "9" * 5000, "-1"],
                             ids=["garbage", "empty", "implausible", "Unicode digits", "huge", "negative"])
    @pytest.mark.parametrize("args", [["doctor", "--nccl"], ["demo", "--as-nccl"]], ids=["doctor", "demo"])
    def test_a_bad_version_on_the_command_line_is_one_line_and_exit_2(self, args, value):
        result = command([*args, value])
        assert result.returncode == 2 and result.stdout == "", (result.stdout, result.stderr[-2000:])
        one_line(result.stderr.strip(), 400)
        assert "sglang-cp-symm" in result.stderr and "9" * 100 not in result.stderr

    def test_help_still_names_the_commands(self):  # the one-line errors did not swallow --help
        result = command(["doctor", "--help"])
        assert result.returncode == 0 and "--nccl" in result.stdout


def test_the_stub_library_answers_as_before_unless_asked(stub_library):
    """The stub gained NCCL_STUB_STATUS; with it unset it still answers 23007 (or NCCL_STUB_VERSION) and 0."""
    code = textwrap.dedent(f"""
        import ctypes, os
        lib = ctypes.CDLL({stub_library!r})
        def ask():
            v = ctypes.c_int(); s = lib.ncclGetVersion(ctypes.byref(v)); return [s, v.value]
        print(ask()); os.environ["NCCL_STUB_VERSION"] = "22809"; print(ask())
        os.environ["NCCL_STUB_STATUS"] = "5"; print(ask())
    """)
    result = run_python(None, code)
    assert result.stdout.split("\n")[:3] == ["[0, 23007]", "[0, 22809]", "[5, 22809]"], result.stderr
