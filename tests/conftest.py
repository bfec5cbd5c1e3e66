"""Shared helpers: run code in a process of its own against one real sglang release.

Each release lives in ``.envs/sglang-X`` (built by ``ci/envs.sh``): the real
wheel with its pinned transformers, on top of ``.venv``. Every test that touches
sglang runs in a subprocess, so import order and process-wide state are those of
a real sglang process and never leak from one test into another: a fresh
interpreter, or, where the check allows it, a process forked from the release's
fork server (``run_python(fresh=False)``, tests/forkserver.py), which has only
the heavy third-party libraries imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from empty_parameters import pytest_runtest_setup  # noqa: F401  (a hook: an empty parameter list fails)

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "tests" / "stubs"
_RELEASE_LINES = [line.split("#", 1)[0].split() for line in (ROOT / "ci" / "releases.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
RELEASES = [fields[0] for fields in _RELEASE_LINES]


def release_set(name: str) -> list:
    """The releases of ci/releases.txt in set ``name`` ("ci": one of each distinct digest, docs/coverage.md; "all": every one)."""
    return [fields[0] for fields in _RELEASE_LINES if name == "all" or fields[1] == name]


#: The releases the per-release proofs run on: set "ci", or every release with CP_SYMM_RELEASES=all
#: (``bash ci/test.sh --all-releases``), or the ones named (CP_SYMM_RELEASES="0.5.17 0.5.20").
_WANTED = os.environ.get("CP_SYMM_RELEASES", "ci").strip()
PROOF_RELEASES = release_set(_WANTED) if _WANTED in ("ci", "all") else _WANTED.split()


NCCL_STUB = ROOT / ".envs" / "libnccl-stub.so"  # tests/stubs/libnccl_stub.c, built by ci/envs.sh


def nccl(version: str) -> dict:
    """The environment that makes the engine's NCCL resolution find NCCL ``version`` (the stub library)."""
    major, minor, patch = (int(part) for part in version.split("."))
    return {"SGLANG_NCCL_SO_PATH": str(NCCL_STUB), "NCCL_STUB_VERSION": str(major * 10000 + minor * 100 + patch)}


def pinned_nccl(release: str) -> dict:
    """``nccl()`` of the NCCL that ``release`` runs in a default install (its torch's pin)."""
    from sglang_cp_symm.pins import pin_for
    from sglang_cp_symm.releases import Release

    return nccl(pin_for(Release.parse(release)).nccl)


def release_dir(release: str) -> Path:
    return ROOT / ".envs" / f"sglang-{release}"


def require_release(release: str) -> Path:
    path = release_dir(release)
    if not (path / "sglang").is_dir():
        message = f"no environment for sglang {release}: run ci/envs.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_python(release: str | None, code: str, env: dict | None = None, timeout: float = 300,
               cwd: Path | None = None, fresh: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (in ``cwd``, default ``tests/``); ``release`` None runs without sglang.

    With a release, the engine finds the NCCL that release pins (``pinned_nccl``), as on a default install;
    ``env`` may name another (``nccl("2.30.7")``) or none (``{"SGLANG_NCCL_SO_PATH": ""}``).

    ``fresh=False`` (with a release) runs it instead in a process forked from that release's fork server
    (tests/forkserver.py): the same environment, working directory, ``sys.path`` and ``.pth`` line as a fresh
    interpreter, with torch, transformers and the other heavy third-party libraries already imported, about 1 s
    instead of 8 s of CPU. Only for a check whose code imports sglang's engine modules (which import those
    libraries first) before anything of the plugin runs, and that is about neither start-up nor state a new
    interpreter draws afresh: forkserver's docstring says which checks must stay fresh, and why.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_") and k != "NCCL_STUB_VERSION"}
    paths = []
    if release is not None:
        paths = [str(require_release(release)), str(STUBS)]
        full_env.update(pinned_nccl(release))
    extra = dict(env or {})
    prepend = extra.pop("PYTHONPATH_PREPEND", None)
    server_env = dict(full_env, PYTHONPATH=os.pathsep.join(paths))
    full_env["PYTHONPATH"] = os.pathsep.join(([prepend] if prepend else []) + paths)
    full_env.update(extra)
    if not fresh and release is not None:
        import forkserver

        return forkserver.run(release, server_env, textwrap.dedent(code), full_env, str(cwd or ROOT / "tests"),
                              timeout)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=str(cwd or ROOT / "tests"),
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    return result.stdout.strip().splitlines()[-1]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadscope``, tests/xdist_schedule.py's units, longest first (its docstring says why)."""
    from xdist_schedule import make_scheduler

    return make_scheduler(config, log)
