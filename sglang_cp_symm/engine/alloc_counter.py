"""Count the symmetric pool's growths where they happen: in the allocator sglang compiles, read from memory.

Why: a growth of a symmetric pool is exactly one call of the allocator's alloc
function, ``nccl_alloc_plug`` in the C++ source (``nccl_allocator_source``) that
sglang's ``pynccl_allocator.get_nccl_mem_pool`` compiles with ``load_inline`` the
first time a pool is needed (every release 0.5.1-0.5.23; the plugin's CP pools of
0.5.9-0.5.11 are built on the same ``_allocator``). A counter bumped there, read from
its fixed address with ctypes, tells "did a pool grow?" in well under a microsecond
and without a driver call, so the watchdog can ask it on every CP all-gather's context
(``cudaMemGetInfo``, the former signal, cost about 6 us per reading on an H100).

How, without changing what is allocated or in which order:
- ``counted_source`` renames the release's two functions (``nccl_alloc_plug`` ->
  ``sglang_cp_symm_counted_alloc``, ``nccl_free_plug`` -> ``sglang_cp_symm_counted_free``;
  their bodies stay byte for byte) and appends an ``extern "C"`` block that defines the
  two names ``CUDAPluggableAllocator`` looks up: each calls the release's function and
  then counts (allocations that returned memory, their bytes, frees) in one exported
  array, ``sglang_cp_symm_pool_counts``. It refuses (returns the reason) unless each
  signature occurs exactly once and the names nowhere else.
- ``install`` puts that source on the allocator module before the pool exists; sglang
  compiles it as it would its own. Every rank of a server runs the same plugin with the
  same switches, so every rank compiles the same allocator.
- ``locate`` finds, once the pool exists, the library this process loaded that exports
  the array: the files mapped into the process (``/proc/self/maps``), each opened with
  ``RTLD_NOLOAD`` (a handle to what is already loaded, never a new load). Exactly one
  must export it.
- ``Counts`` reads the three cells. The watchdog proves the counter on its first
  reading (allocations minus frees must equal the segments the pools' snapshots show)
  and keeps proving it at every growth; where anything here fails it falls back to
  ``cudaMemGetInfo`` with one line that says why.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, Optional, Tuple

SYMBOL = "sglang_cp_symm_pool_counts"
ALLOC, BYTES, FREES = 0, 1, 2  # the cells of the array
ALLOC_NAME, FREE_NAME = "nccl_alloc_plug", "nccl_free_plug"
ALLOC_SIGNATURE = "void* nccl_alloc_plug(size_t size, int device, void* stream)"
FREE_SIGNATURE = "void nccl_free_plug(void* ptr, size_t size, int device, void* stream)"
INNER_ALLOC, INNER_FREE = "sglang_cp_symm_counted_alloc", "sglang_cp_symm_counted_free"
SOURCE_ATTRIBUTE = "nccl_allocator_source"

COUNTING_BLOCK = f"""
// sglang-cp-symm: the release's allocator above, renamed; these count each of its calls (the pool watchdog).
extern "C" {{

__attribute__((visibility("default"))) unsigned long long {SYMBOL}[3] = {{0, 0, 0}};

{ALLOC_SIGNATURE} {{
  void* counted = {INNER_ALLOC}(size, device, stream);
  if (counted != NULL) {{
    __atomic_fetch_add(&{SYMBOL}[{BYTES}], (unsigned long long)size, __ATOMIC_RELAXED);
    __atomic_fetch_add(&{SYMBOL}[{ALLOC}], 1ULL, __ATOMIC_RELEASE);
  }}
  return counted;
}}

{FREE_SIGNATURE} {{
  {INNER_FREE}(ptr, size, device, stream);
  __atomic_fetch_add(&{SYMBOL}[{FREES}], 1ULL, __ATOMIC_RELEASE);
}}

}}
"""


def counted_source(source: Any) -> Tuple[Optional[str], str]:
    """(the source with the counting block, "") or (None, why it cannot be counted)."""
    if not isinstance(source, str):
        return None, f"the allocator source is a {type(source).__name__}, not a string"
    if SYMBOL in source:
        return source, ""  # counted already (a second install)
    for name, signature in ((ALLOC_NAME, ALLOC_SIGNATURE), (FREE_NAME, FREE_SIGNATURE)):
        if source.count(signature) != 1 or source.count(name) != 1:
            return None, (f"the allocator source does not define {name} exactly once as '{signature}' "
                          f"(the name occurs {source.count(name)} time(s))")
    if INNER_ALLOC in source or INNER_FREE in source:
        return None, "the allocator source already uses the names the counter would give its functions"
    renamed = (source.replace(ALLOC_SIGNATURE, ALLOC_SIGNATURE.replace(ALLOC_NAME, INNER_ALLOC))
               .replace(FREE_SIGNATURE, FREE_SIGNATURE.replace(FREE_NAME, INNER_FREE)))
    return renamed + COUNTING_BLOCK, ""


def pool_exists(allocator_module: Any) -> bool:
    return getattr(allocator_module, "_allocator", None) is not None or \
        getattr(allocator_module, "_mem_pool", None) is not None


def install(allocator_module: Any) -> Tuple[Optional[Callable[[], None]], str]:
    """Put the counting source on sglang's allocator module before its pool is compiled.

    Returns (undo, "") or (None, why not). The undo restores the release's source if the
    pool was not compiled meanwhile (once compiled, the loaded library stays).
    """
    original = getattr(allocator_module, SOURCE_ATTRIBUTE, None)
    if pool_exists(allocator_module):
        if isinstance(original, str) and SYMBOL in original:  # counted before it was compiled: locate() proves it
            return (lambda: None), ""
        return None, "sglang's symmetric pool was compiled before the plugin was loaded"
    counted, why = counted_source(original)
    if counted is None:
        return None, why
    setattr(allocator_module, SOURCE_ATTRIBUTE, counted)

    def undo() -> None:
        if getattr(allocator_module, SOURCE_ATTRIBUTE, None) is counted and not pool_exists(allocator_module):
            setattr(allocator_module, SOURCE_ATTRIBUTE, original)

    return undo, ""


def mapped_files(maps: str = "/proc/self/maps") -> list:
    """The files mapped into this process, each once, in the order the kernel lists them."""
    seen, files = set(), []
    with open(maps) as listing:
        for line in listing:
            parts = line.split(None, 5)
            path = parts[5].strip() if len(parts) == 6 else ""
            if path.startswith("/") and path not in seen:
                seen.add(path)
                files.append(path)
    return files


def locate(files: Optional[list] = None) -> Tuple[Optional[int], str]:
    """(address of the counting array in the library this process loaded, "") or (None, why not).

    Each mapped file is opened with ``RTLD_NOLOAD``: a handle to a library already loaded,
    or an error; nothing is loaded here.
    """
    noload = getattr(os, "RTLD_NOLOAD", None)
    if noload is None:
        return None, "this platform has no RTLD_NOLOAD"
    try:
        files = mapped_files() if files is None else files
    except OSError as exc:
        return None, f"the process's mapped files cannot be read ({exc})"
    found = {}
    for path in files:
        try:
            lib = ctypes.CDLL(path, mode=noload | os.RTLD_LAZY)
            address = ctypes.addressof(ctypes.c_uint64.in_dll(lib, SYMBOL))
        except (OSError, ValueError):
            continue
        found.setdefault(address, path)
    if len(found) != 1:
        return None, (f"{len(found)} loaded libraries export the counter (one expected): "
                      f"{', '.join(sorted(found.values()))[:200] or 'none'}")
    return next(iter(found)), ""


class Counts:
    """The three cells (allocations, bytes allocated, frees) at a fixed address, read without a call."""

    __slots__ = ("cells",)

    def __init__(self, address: int) -> None:
        self.cells = (ctypes.c_uint64 * 3).from_address(address)

    def reader(self) -> Callable[[], int]:
        """The allocation count as a call with no Python frame of its own (``operator.getitem`` bound)."""
        import functools
        import operator

        return functools.partial(operator.getitem, self.cells, ALLOC)

    def snapshot(self) -> Tuple[int, int, int]:
        """(allocations, bytes, frees); the count first: the bytes it covers were added before it."""
        return self.cells[ALLOC], self.cells[BYTES], self.cells[FREES]
