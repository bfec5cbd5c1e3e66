"""Every sglang version string metadata can hold, validated where it enters (issue 20, item 4).

Classes, not single values: final, post, pre-release, dev, local (+vendor), epoch, other lengths, newer and older
than the register, garbage, empty, Unicode digits and letters, huge numbers, undecodable bytes. ``read_build`` is
pure and runs in-process over all of them. ``installed_build`` and the commands run in fresh processes against a
site folder that holds the real sglang source of a release next to a copy of its real ``.dist-info`` whose
``Version`` is rewritten: that is how a vendor's or a development build of sglang is installed, and none can be
installed here otherwise.
"""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import require_release, run_python
from sglang_cp_symm.releases import Build, Release, read_build
from sglang_cp_symm.targets import is_supported

READABLE = {  # version string: (release, final, words the kind holds)
    # final
    "0.5.11": ((0, 5, 11), True, "final"),
    "v0.5.11": ((0, 5, 11), True, "final"),
    " 0.5.11\n": ((0, 5, 11), True, "final"),
    "0!0.5.11": ((0, 5, 11), True, "final"),
    # post
    "0.5.10.post1": ((0, 5, 10), False, "post"),
    "0.5.10-1": ((0, 5, 10), False, "post"),
    "0.5.10post": ((0, 5, 10), False, "post"),
    "0.5.10.rev2": ((0, 5, 10), False, "post"),
    # pre-releases
    "0.5.12rc1": ((0, 5, 12), False, "pre-release"),
    "0.5.12a0": ((0, 5, 12), False, "pre-release"),
    "0.5.12.b2": ((0, 5, 12), False, "pre-release"),
    "0.5.12-preview.3": ((0, 5, 12), False, "pre-release"),
    "0.5.12C1": ((0, 5, 12), False, "pre-release"),
    # dev
    "0.5.12.dev0": ((0, 5, 12), False, "dev"),
    "0.5.12dev": ((0, 5, 12), False, "dev"),
    "0.5.12rc1.post2.dev3": ((0, 5, 12), False, "pre-release, post, dev"),
    # local (+vendor)
    "0.5.11+corp.2": ((0, 5, 11), False, "local +corp.2"),
    "0.5.11+cu130": ((0, 5, 11), False, "local +cu130"),
    "0.5.11.post1+g1a2b3c4.d20261206": ((0, 5, 11), False, "post, local +g1a2b3c4.d20261206"),
    # epoch, and other lengths
    "1!0.5.11": ((0, 5, 11), False, "epoch"),
    "0.5": ((0, 5, 0), False, "not X.Y.Z"),
    "0.5.11.1": ((0, 5, 11), False, "not X.Y.Z"),
    # newer and older than the register
    "0.5.24": ((0, 5, 24), True, "final"),
    "1.0.0": ((1, 0, 0), True, "final"),
    "0.5.5": ((0, 5, 5), True, "final"),
    "0.0.0": ((0, 0, 0), True, "final"),
    # huge numbers: any size up to 64 digits is a number
    "0.5." + "9" * 64: ((0, 5, int("9" * 64)), True, "final"),
    "9" * 30 + ".0.0": ((int("9" * 30), 0, 0), True, "final"),
}

UNREADABLE = [
    "", " ", "\n", "garbage", "sglang", "0.5.x", "0.5.11 final", "0.5..11", ".0.5.11", "0.5.11.", "0.5.11+",
    "0.5.11+corp!", "0.5.11.dev.post1", "latest",
    "0.5.\u0661\u0661", "\u0660.5.11", "0.5.\uff11\uff11", "0.5.\u00b9\u00b9",  # Unicode digits: [0-9] only
    "0.5.11+\u212a", "0.5.11.po\u017ft1",                                       # letters that case-fold to ASCII
    "0.5." + "9" * 65, "0.5.11+" + "a" * 300, "x" * 100_000,                    # sizes
    "0.5.11\udcff", "0.5.11\x00", "0.5.11\x1b[31m",                              # bytes and controls
]


def assert_one_short_line(text: str, raw: str) -> None:
    assert "\n" not in text and len(text) < 300, text[:400]
    assert raw[:41] not in text or len(raw) <= 40  # never more than a short prefix of the value
    text.encode("utf-8")  # printable as it stands


class TestReadable:
    @pytest.mark.parametrize("raw", sorted(READABLE), ids=lambda raw: ascii(raw)[:40])
    def test_each_class_is_read_exactly(self, raw):
        release, final, kind = READABLE[raw]
        build = read_build(raw)
        assert (build.release, build.final, build.kind, build.problem) == (release, final, kind, None)
        assert build.raw == raw and isinstance(build.release, Release)

    def test_only_a_plain_release_inside_the_register_is_a_final_supported_one(self):
        supported = {raw for raw, (release, final, _) in READABLE.items() if final and is_supported(Release(*release))}
        assert supported == {"0.5.11", "v0.5.11", " 0.5.11\n", "0!0.5.11"}


class TestUnreadable:
    @pytest.mark.parametrize("raw", UNREADABLE, ids=lambda raw: ascii(raw)[:40])
    def test_garbage_is_said_in_one_line_never_raised(self, raw):
        build = read_build(raw)
        assert build.release is None and not build.final and build.kind == "unreadable"
        assert "reinstall sglang" in build.problem
        assert_one_short_line(build.problem, raw)
        assert_one_short_line(build.shown, raw)

    @pytest.mark.parametrize("value", [None, 5, b"0.5.11"])
    def test_not_a_string_at_all(self, value):  # metadata without a Version field gives None
        build = read_build(value)
        assert build.release is None and build.problem and build.raw == ""


class TestRelease:
    def test_release_stays_a_3_tuple_compared_with_tuples(self):
        release = read_build("0.5.11+corp").release
        assert release == (0, 5, 11) and (0, 5, 10) < release < (0, 5, 12) and len(release) == 3
        assert tuple(release) == (0, 5, 11) and str(release) == "0.5.11"

    @pytest.mark.parametrize("text,expected", [("0.5.10.post1", (0, 5, 10)), ("0.5.11", (0, 5, 11)),
                                               ("v0.5.9rc1", (0, 5, 9))])
    def test_parse_keeps_reading_the_leading_number(self, text, expected):  # the register and the wheels use it
        assert Release.parse(text) == expected

    @pytest.mark.parametrize("text", ["", "0.5", "0.5.\u0661", "garbage", None, "x" * 10_000])
    def test_parse_refuses_in_one_short_line(self, text):
        with pytest.raises(ValueError) as caught:
            Release.parse(text)
        assert len(str(caught.value)) < 100


# ---------------------------------------------------------------------------------------------------------------
# Installed: the real source of a release, with metadata that names another version.

RELEASE = "0.5.11"


def vendor_site(tmp_path, version: "str | bytes | None") -> str:
    """A site folder: the real ``sglang`` of ``RELEASE`` (a link) and a copy of its ``.dist-info`` whose Version is
    ``version`` (bytes: written as they are; None: no Version field at all)."""
    source = require_release(RELEASE)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sglang").symlink_to(source / "sglang")
    info = site / f"sglang-{RELEASE}.dist-info"
    shutil.copytree(source / f"sglang-{RELEASE}.dist-info", info)
    lines = (info / "METADATA").read_bytes().split(b"\n")
    at = lines.index(f"Version: {RELEASE}".encode())
    if version is None:
        del lines[at]
    else:
        lines[at] = b"Version: " + (version if isinstance(version, bytes) else version.encode("utf-8"))
    (info / "METADATA").write_bytes(b"\n".join(lines))
    return str(site)


def installed(site: str) -> dict:
    code = """
        import json
        from sglang_cp_symm.releases import installed_build, installed_sglang
        b = installed_build()
        print(json.dumps([b.release, b.final, b.kind, b.problem, installed_sglang(), b.shown]))
    """
    result = run_python(RELEASE, code, env={"PYTHONPATH_PREPEND": site})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


class TestInstalled:
    @pytest.mark.parametrize("version,release,final,problem", [
        ("0.5.11.dev0+corp.7", [0, 5, 11], False, None),
        ("0.5.11.post1", [0, 5, 11], False, None),
        ("0.5.24", [0, 5, 24], True, None),
        ("vendor-build", None, False, "is not a version"),
        ("", None, False, "is not a version"),
        ("0.5.\u0661\u0661", None, False, "is not a version"),
        (b"0.5.11\xff\xfe", None, False, "cannot be read (UnicodeDecodeError)"),
        (None, None, False, "has no version"),
    ], ids=["dev+local", "post", "newer", "garbage", "empty", "Unicode digits", "not UTF-8", "no Version"])
    def test_installed_build_never_raises_and_tells_unreadable_from_absent(self, tmp_path, version, release, final,
                                                                           problem):
        got_release, got_final, kind, got_problem, plain, shown = installed(vendor_site(tmp_path, version))
        assert (got_release, got_final, plain) == (release, final, release)
        assert (got_problem is None) if problem is None else (problem in got_problem)
        assert shown is not None  # installed, whatever its version says: never "not installed"

    def test_without_sglang_it_is_none(self):
        result = run_python(None, "from sglang_cp_symm.releases import installed_build as b; print(b())")
        assert result.stdout.strip() == "None", result.stderr


# ---------------------------------------------------------------------------------------------------------------
# The commands, in fresh processes: no traceback whatever the version says.

def command(site: str, args, env=None):
    code = f"import runpy, sys; sys.argv = ['sglang-cp-symm', *{list(args)!r}]\n" \
           "runpy.run_module('sglang_cp_symm', run_name='__main__')"
    return run_python(RELEASE, code, env={"PYTHONPATH_PREPEND": site, "SGLANG_CP_SYMM": "1", **(env or {})},
                      timeout=180)


def no_traceback(result, codes=(0,)):
    assert result.returncode in codes and "Traceback" not in result.stderr + result.stdout, \
        f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


#: The doctor runs (each imports torch: seconds), started together by ``doctors`` and judged below.
DOCTORS = {
    "vendor dev build": ("0.5.11.dev0+corp.7", ["doctor", "--json", "--nccl", "2.30.7"]),
    "not UTF-8, --check": (b"0.5.11\xff", ["doctor", "--check"]),
}


@pytest.fixture(scope="module")
def doctors(tmp_path_factory):
    import os
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(2, min(len(DOCTORS), os.cpu_count() or 2))) as pool:
        futures = {name: pool.submit(command, vendor_site(tmp_path_factory.mktemp("doctor"), version), args)
                   for name, (version, args) in DOCTORS.items()}
        return {name: future.result() for name, future in futures.items()}


class TestCommands:
    def test_doctor_reads_a_vendor_dev_build_by_its_source(self, doctors):
        result = doctors["vendor dev build"]
        no_traceback(result)
        report = json.loads(result.stdout)
        assert report["sglang"] == "0.5.11.dev0+corp.7"
        assert report["sglang_build"] == {"final": False, "kind": "dev, local +corp.7"}
        assert report["targets"]["cp_utils.reorganized_kv_cache"]["source"] == "needs patch"

    def test_doctor_says_what_is_wrong_in_one_line(self, doctors):
        result = doctors["not UTF-8, --check"]
        no_traceback(result, (0, 1))
        lines = [line for line in result.stdout.splitlines() if "sglang's metadata cannot be read" in line]
        assert len(lines) == 1 and len(lines[0]) < 300, result.stdout

    @pytest.mark.parametrize("version,says", [
        ("0.5.11.post1", "sglang: 0.5.11.post1   mode: on"),
        ("", "problem: sglang's version '' is not a version"),
        ("\u0660.5.11", "problem: sglang's version '\u0660.5.11' is not a version"),
        ("0.5." + "9" * 80, "problem: sglang's version '0.5.9999"),
        (None, "problem: sglang's metadata has no version"),
    ], ids=["post", "empty", "Unicode digit", "huge", "no Version"])
    def test_status(self, tmp_path, version, says):
        result = command(vendor_site(tmp_path, version), ["status"])
        no_traceback(result)
        assert says in result.stdout and "not installed" not in result.stdout, result.stdout

    def test_status_apply_on_a_garbage_version_changes_nothing(self, tmp_path):
        result = command(vendor_site(tmp_path, "nightly"), ["status", "--apply", "--json"])
        no_traceback(result)
        status = json.loads(result.stdout[result.stdout.index("{"):])
        assert status["sglang"] == "nightly" and status["imports"] == {}
        assert status["outcome"].startswith("nothing applied")


def test_build_is_a_frozen_record():
    build = read_build("0.5.11")
    with pytest.raises(Exception):
        build.raw = "0.5.12"  # type: ignore[misc]
    assert isinstance(build, Build)
