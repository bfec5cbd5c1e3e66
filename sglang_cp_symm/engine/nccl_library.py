"""Which NCCL the engine's own communicator runs on: resolved the way sglang's pynccl resolves it.

sglang's ``find_nccl_library`` (``distributed/device_communicators/pynccl_wrapper.py``,
0.5.10 line 37, 0.5.23 line 39) takes ``SGLANG_NCCL_SO_PATH`` when it is set, else
``libnccl.so.2`` when torch is a CUDA build (``librccl.so.1`` on ROCm), and
``ctypes.CDLL`` opens it. Once torch is imported its own NCCL is already in the
process under that name, so the bare name returns torch's copy; opened *before*
torch, it would load whatever the dynamic linker finds first (on the H200 image:
the system's 2.28.3 instead of torch's 2.28.9), and every later bare open,
sglang's included, would get that one. Hence the rule here: NCCL is read only
once torch is imported (the caller waits for that), never by importing torch,
and by exactly the path sglang will open, so what is judged is what runs.

Whatever is found is validated here, where it enters: a path that is missing, a
folder, not a library, or a library without ``ncclGetVersion``; a non-zero status;
a code that is not what a plausible released NCCL writes (``nccl_policy.code_problem``).
Each is "unknown" with one line naming the library (a short prefix), what was wrong
and what to do, and unknown means hold back. Nothing here raises: the engine calls
it inside sglang's own import of its modules.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any, Mapping, Optional, Tuple

from .nccl_policy import NcclVersion, code_problem, implausible
from .settings import shown

SO_PATH_VARIABLE = "SGLANG_NCCL_SO_PATH"
#: What to do when the NCCL cannot be told, said once at the end of every such line.
WHAT_TO_DO = f"point {SO_PATH_VARIABLE} at the engine's libnccl.so.2 (an absolute path), or unset it"
#: ncclResult_t (v2.30.7-1 src/nccl.h.in:44-53), to name a non-zero status of ncclGetVersion.
NCCL_RESULTS = ("ncclSuccess", "ncclUnhandledCudaError", "ncclSystemError", "ncclInternalError",
                "ncclInvalidArgument", "ncclInvalidUsage", "ncclRemoteError", "ncclInProgress", "ncclTimeout")
#: Longer than any path Linux opens (PATH_MAX is 4096): said as such, never handed to dlopen.
LONGEST_PATH = 4096


def pynccl_library(environ: Mapping[str, str], torch: Any) -> Optional[str]:
    """The file name sglang's pynccl opens, or None where it opens none (a torch without CUDA or ROCm).

    An empty ``SGLANG_NCCL_SO_PATH`` is unset, as sglang reads it (``if so_file:``, pynccl_wrapper.py:49 in 0.5.6
    and 0.5.10, :51 in 0.5.23); anything else is taken as written, as sglang takes it.
    """
    chosen = environ.get(SO_PATH_VARIABLE)
    if chosen:
        return chosen
    version = getattr(torch, "version", None)
    if getattr(version, "cuda", None) is not None:
        return "libnccl.so.2"
    if getattr(version, "hip", None) is not None:
        return "librccl.so.1"
    return None


def path_problem(path: str) -> Optional[str]:
    """Why ``path`` (from ``SGLANG_NCCL_SO_PATH``) cannot be judged before it is opened, or None.

    sglang opens the value as written (``ctypes.CDLL(so_file)``), so spaces around it, a relative path (which
    each process resolves against its own working folder, not necessarily this one's), a folder or a missing
    file are reported as what they are instead of as a loader error. A bare name (``libnccl.so.2``) is the
    dynamic linker's search, as sglang's default, and is left to it.
    """
    if path != path.strip():
        return "has spaces at its start or end, which sglang keeps (it opens the value as written)"
    if "\x00" in path:
        return "holds a NUL character"
    if len(path) > LONGEST_PATH:
        return f"is {len(path)} characters long, more than any path the system opens ({LONGEST_PATH})"
    if "/" not in path:
        return None
    if not os.path.isabs(path):
        return "is a relative path, which each of sglang's processes resolves against its own working folder"
    try:
        if os.path.isdir(path):
            return "is a folder, not a library"
        if not os.path.exists(path):
            return "does not exist"
    except (OSError, ValueError) as exc:  # pragma: no cover - isdir/exists swallow OSError; kept for odd paths
        return f"cannot be checked ({type(exc).__name__})"
    return None


def read_library(path: str) -> Tuple[Optional[NcclVersion], Optional[str]]:
    """Open ``path`` as sglang does and ask ``ncclGetVersion``: (version, None), or (None, why). Never raises."""
    problem = path_problem(path)
    if problem:
        return None, problem
    try:
        lib = ctypes.CDLL(path)
    except Exception as exc:  # OSError from dlopen: not a library, not found, wrong architecture
        detail = str(exc).rsplit(": ", 1)[-1]  # dlerror() is "<path>: <why>"; the path is said already
        return None, f"cannot be opened as a library: {shown(detail)}"
    try:
        get_version = lib.ncclGetVersion
    except AttributeError:
        return None, "has no ncclGetVersion symbol, so it is not an NCCL library"
    get_version.restype = ctypes.c_int
    get_version.argtypes = [ctypes.POINTER(ctypes.c_int)]
    code = ctypes.c_int(0)
    try:
        status = get_version(ctypes.byref(code))
    except Exception as exc:  # pragma: no cover - a C function answers; kept so that nothing here raises
        return None, f"ncclGetVersion failed ({type(exc).__name__})"
    if status != 0:
        name = NCCL_RESULTS[status] if 0 < status < len(NCCL_RESULTS) else "not an ncclResult_t"
        return None, f"ncclGetVersion returned status {status} ({name}), not ncclSuccess"
    version, problem = code_problem(code.value)
    if problem:
        return None, f"ncclGetVersion wrote {code.value}: {problem}"
    return version, None


def engine_nccl(environ: Optional[Mapping[str, str]] = None) -> Tuple[Optional[NcclVersion], str]:
    """(version, where it was read) of the NCCL sglang's pynccl loads; (None, one line: why, and what to do) when
    it cannot be told: no torch yet, no NCCL for this torch, a bad path, a library that is no NCCL, a non-zero
    status, or a code that is not a plausible released NCCL (``nccl_policy.code_problem``). Unknown means hold
    back, so every such case gives None. Never raises.

    Call it only when the version is needed and torch is in the process; it never
    imports torch itself, and with torch absent it answers "unknown" rather than
    open a library the engine has not loaded yet.
    """
    env = os.environ if environ is None else environ
    torch = sys.modules.get("torch")
    if torch is None:
        return None, "torch is not imported yet, and opening libnccl first could change which NCCL the engine gets"
    try:
        path = pynccl_library(env, torch)
    except Exception as exc:  # pragma: no cover - a Mapping that raises; kept so that nothing here raises
        return None, f"{SO_PATH_VARIABLE} cannot be read ({type(exc).__name__})"
    if path is None:
        return None, "this torch has neither CUDA nor ROCm, so sglang opens no NCCL"
    from_env = bool(env.get(SO_PATH_VARIABLE))
    version, problem = read_library(path)
    if version is None:
        named = f"{SO_PATH_VARIABLE}={shown(path)}" if from_env else f"{path} (torch's copy)"
        return None, f"{named}: {problem}; NCCL unknown, so the plugin holds back: {WHAT_TO_DO}"
    plain = path if path.isprintable() and len(path) <= 200 else shown(path)  # an odd value: quoted, shortened
    return version, f"{SO_PATH_VARIABLE}={plain}" if from_env else f"{path} (torch's copy)"


def torch_built_with() -> Optional[NcclVersion]:
    """The NCCL torch reports (``torch.cuda.nccl.version()``), where torch is imported and has a plausible one."""
    torch = sys.modules.get("torch")
    try:
        raw = torch.cuda.nccl.version() if torch is not None else None
        if isinstance(raw, int):
            return code_problem(raw)[0]
        version = None if raw is None else NcclVersion.parse(raw)
    except Exception:
        return None
    return None if version is None or implausible(version) else version


def known_capability() -> Optional[Tuple[int, int]]:
    """The GPU's compute capability where CUDA is already up in this process, else None (then the plan assumes
    sm90+). Never initialises CUDA (a scheduler must pick its device first) and never imports torch."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            major, minor = torch.cuda.get_device_capability()
            return int(major), int(minor)
    except Exception:
        pass
    return None


def hopper_or_later(capability: Optional[Tuple[int, int]]) -> bool:
    """Compute capability 9.0 or more (Hopper, Blackwell), where NCCL launches symmetric kernels with programmatic
    stream serialization (``nccl_policy``'s docstring) and the race lives; an unknown GPU is taken as one."""
    return capability is None or capability[0] >= 9


def sm90_or_later() -> Tuple[bool, str]:
    """Whether this process's GPU is Hopper or later (``known_capability``), and why; assumed so unless CUDA is
    already up."""
    capability = known_capability()
    if capability is None:
        return True, "assumed sm90+ (CUDA not initialised yet)"
    return hopper_or_later(capability), f"compute capability {capability[0]}.x"
