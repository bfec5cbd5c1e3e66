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
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any, Mapping, Optional, Tuple

from .nccl_policy import NcclVersion

SO_PATH_VARIABLE = "SGLANG_NCCL_SO_PATH"


def pynccl_library(environ: Mapping[str, str], torch: Any) -> Optional[str]:
    """The file name sglang's pynccl opens, or None where it opens none (a torch without CUDA or ROCm)."""
    chosen = environ.get(SO_PATH_VARIABLE)
    if chosen:
        return chosen
    version = getattr(torch, "version", None)
    if getattr(version, "cuda", None) is not None:
        return "libnccl.so.2"
    if getattr(version, "hip", None) is not None:
        return "librccl.so.1"
    return None


def engine_nccl(environ: Optional[Mapping[str, str]] = None) -> Tuple[Optional[NcclVersion], str]:
    """(version, where it was read) of the NCCL sglang's pynccl loads; (None, why) when it cannot be told.

    Call it only when the version is needed and torch is in the process; it never
    imports torch itself, and with torch absent it answers "unknown" rather than
    open a library the engine has not loaded yet.
    """
    env = os.environ if environ is None else environ
    torch = sys.modules.get("torch")
    if torch is None:
        return None, "torch is not imported yet, and opening libnccl first could change which NCCL the engine gets"
    path = pynccl_library(env, torch)
    if path is None:
        return None, "this torch has neither CUDA nor ROCm, so sglang opens no NCCL"
    try:
        lib = ctypes.CDLL(path)
        code = ctypes.c_int()
        status = lib.ncclGetVersion(ctypes.byref(code))
    except (OSError, AttributeError) as exc:
        return None, f"{path} could not be opened ({str(exc)[:120]})"
    if status != 0:
        return None, f"{path}: ncclGetVersion returned {status}"
    where = f"{SO_PATH_VARIABLE}={path}" if env.get(SO_PATH_VARIABLE) else f"{path} (torch's copy)"
    return NcclVersion.parse(code.value), where


def torch_built_with() -> Optional[NcclVersion]:
    """The NCCL torch reports (``torch.cuda.nccl.version()``), where torch is imported and has one."""
    torch = sys.modules.get("torch")
    try:
        return NcclVersion.parse(torch.cuda.nccl.version()) if torch is not None else None
    except Exception:
        return None


def sm90_or_later() -> Tuple[bool, str]:
    """Whether the GPU is Hopper or later; assumed so unless CUDA is already up.

    Never initialises CUDA (a scheduler must pick its device first) and never imports torch.
    """
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            major, _ = torch.cuda.get_device_capability()
            return major >= 9, f"compute capability {major}.x"
    except Exception:
        pass
    return True, "assumed sm90+ (CUDA not initialised yet)"


def known_capability() -> Optional[Tuple[int, int]]:
    """The GPU's compute capability where CUDA is already up in this process, else None (then the plan assumes
    sm90+). Never initialises CUDA and never imports torch, like ``sm90_or_later``."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            major, minor = torch.cuda.get_device_capability()
            return int(major), int(minor)
    except Exception:
        pass
    return None
