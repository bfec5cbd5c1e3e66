"""Stage A: the watchdog's signal, a counter compiled into sglang's allocator (issue 23).

Real: every release's own allocator source, read from its published wheel
(``.cache/wheels``, 0.5.1-0.5.23); the transformation the plugin applies to it; a real
compile of the result with the machine's C++ compiler into a shared library; real calls
of the ``nccl_alloc_plug``/``nccl_free_plug`` that ``CUDAPluggableAllocator`` would look
up; ``locate`` finding the counter in the loaded library through ``/proc/self/maps`` and
``RTLD_NOLOAD``; the counting read from memory.
Faked, because this machine has no GPU and no NCCL: ``cuda_runtime.h`` (a header that only
includes the C library headers the sources use) and NCCL (a small library whose
``ncclMemAlloc`` is ``malloc`` and fails when told to). sglang compiles the same source with
``torch.utils.cpp_extension.load_inline`` against the real ones on a GPU host (stage C,
tests/engine/test_gpu_warmup.py, counts it against the pools' snapshots there).
"""

from __future__ import annotations

import ast
import ctypes
import hashlib
import json
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from sglang_cp_symm.engine import alloc_counter as ac

ROOT = Path(__file__).resolve().parents[2]
WHEELS = sorted((ROOT / ".cache" / "wheels").glob("sglang-0.5.*.whl"))
ALLOCATOR = "sglang/srt/distributed/device_communicators/pynccl_allocator.py"


def release_of(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def allocator_source(wheel: Path) -> str:
    """The release's ``nccl_allocator_source``, read as Python reads it (the module-level string)."""
    tree = ast.parse(zipfile.ZipFile(wheel).read(ALLOCATOR).decode())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == ac.SOURCE_ATTRIBUTE for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{wheel.name}: no {ac.SOURCE_ATTRIBUTE}")


SOURCES = {release_of(w): allocator_source(w) for w in WHEELS}
SUPPORTED = [r for r in SOURCES if tuple(int(p) for p in r.split(".post")[0].split(".")) >= (0, 5, 6)]
DISTINCT = {}  # one supported release per distinct source: the compile test runs once per source
for _release in SUPPORTED:  # (before 0.5.6 the source includes nccl.h, which this machine lacks)
    DISTINCT.setdefault(hashlib.sha256(SOURCES[_release].encode()).hexdigest(), _release)

if not WHEELS:
    pytest.skip("no sglang wheels in .cache/wheels (ci/fetch-wheels.sh)", allow_module_level=True)


def test_the_wheels_cover_every_supported_release():
    assert {"0.5.6", "0.5.9", "0.5.11", "0.5.12", "0.5.23"} <= set(SOURCES)


@pytest.mark.parametrize("release", sorted(SOURCES, key=lambda r: [int(p) if p.isdigit() else p
                                                                   for p in r.replace("post", ".").split(".")]))
def test_every_releases_allocator_is_counted_without_touching_its_functions(release):
    source = SOURCES[release]
    counted, why = ac.counted_source(source)
    assert counted is not None, why
    body, block = counted[: len(counted) - len(ac.COUNTING_BLOCK)], counted[len(counted) - len(ac.COUNTING_BLOCK):]
    assert block == ac.COUNTING_BLOCK
    # the release's functions, byte for byte, under the new names: nothing allocated differently or in another order
    assert body.replace(ac.INNER_ALLOC, ac.ALLOC_NAME).replace(ac.INNER_FREE, ac.FREE_NAME) == source
    assert ac.counted_source(counted) == (counted, "")  # a second install changes nothing


@pytest.mark.parametrize("bad, expected", [
    (None, "not a string"),
    ("void* nccl_alloc_plug(size_t size, int device) { return 0; }", "nccl_alloc_plug exactly once"),
    (SOURCES.get("0.5.11", "") + "\n// nccl_free_plug is also named here\n", "the name occurs 2 time(s)"),
    (SOURCES.get("0.5.11", "") + f"\nint {ac.INNER_ALLOC};\n", "already uses the names"),
])
def test_a_source_of_another_shape_is_refused_with_the_reason(bad, expected):
    counted, why = ac.counted_source(bad)
    assert counted is None and expected in why


def test_install_puts_the_counted_source_on_the_module_only_before_the_pool_exists():
    module = types.SimpleNamespace(nccl_allocator_source=SOURCES["0.5.11"], _allocator=None, _mem_pool=None)
    undo, why = ac.install(module)
    assert why == "" and ac.SYMBOL in module.nccl_allocator_source
    undo()
    assert module.nccl_allocator_source == SOURCES["0.5.11"]
    module._mem_pool = object()  # sglang compiled its pool before the plugin loaded
    undo, why = ac.install(module)
    assert undo is None and "compiled before the plugin was loaded" in why
    assert module.nccl_allocator_source == SOURCES["0.5.11"]


# -- a real compile of every distinct source ------------------------------------------------------
STUB_NCCL = r"""
#include <stdlib.h>
#include <stddef.h>
int stub_fail_next = 0;
int ncclMemAlloc(void** ptr, size_t size) {
  if (stub_fail_next) { stub_fail_next = 0; return 1; }
  *ptr = malloc(size);
  return 0;
}
int ncclMemFree(void* ptr) { free(ptr); return 0; }
int ncclCommWindowRegister(void* comm, void* buff, size_t size, void** win, int flags) { return 0; }
const char* ncclGetErrorString(int result) { return "stub error"; }
"""

STUB_CUDA_RUNTIME = "#include <cstdio>\n#include <cstdlib>\n#include <cstddef>\n#include <cstdint>\n"

CALLS = r"""
import ctypes, json, os, sys
from sglang_cp_symm.engine import alloc_counter as ac
nccl = ctypes.CDLL(sys.argv[1], mode=os.RTLD_GLOBAL)
before, why_before = ac.locate()  # nothing loaded yet exports the counter
lib = ctypes.CDLL(sys.argv[2])
alloc, free = lib.nccl_alloc_plug, lib.nccl_free_plug
alloc.restype, alloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
free.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
os.environ["SGLANG_TMP_NCCL_COMM_VALUE"] = "0"  # what sglang's context sets; up to 0.5.11 the alloc reads it
address, why = ac.locate()
counts = ac.Counts(address)
read = counts.reader()
seen = [read()]
a = alloc(2 << 20, 0, None); seen.append(read())
b = alloc(20 << 20, 0, None); seen.append(read())
failed = None
if sys.argv[3] == "checks":  # the release returns NULL when ncclMemAlloc fails (0.5.8+; 0.5.6-0.5.7 do not check)
    ctypes.c_int.in_dll(nccl, "stub_fail_next").value = 1
    failed = alloc(4 << 20, 0, None)
seen.append(read())
free(a, 2 << 20, 0, None)
print(json.dumps({"before": before, "why_before": why_before, "address": address == ctypes.addressof(
    ctypes.c_uint64.in_dll(lib, ac.SYMBOL)), "seen": seen, "snapshot": counts.snapshot(), "failed": failed}))
"""


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler on this machine")
    folder = tmp_path_factory.mktemp("stubs")
    (folder / "cuda_runtime.h").write_text(STUB_CUDA_RUNTIME)
    (folder / "nccl_stub.c").write_text(STUB_NCCL)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(folder / "libnccl_stub.so"), str(folder / "nccl_stub.c")],
                   check=True)
    return folder


@pytest.mark.parametrize("release", sorted(DISTINCT.values()))
def test_the_counted_allocator_compiles_and_counts_each_call_that_returned_memory(release, stubs, tmp_path):
    counted, why = ac.counted_source(SOURCES[release])
    (tmp_path / "main.cpp").write_text(counted)
    lib = tmp_path / "nccl_allocator.so"
    build = subprocess.run(["g++", "-std=c++17", "-shared", "-fPIC", "-I", str(stubs), "-o", str(lib),
                            str(tmp_path / "main.cpp")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    checks = "checks" if "NCCLCHECK(ncclMemAlloc" in SOURCES[release] else "unchecked"
    run = subprocess.run([sys.executable, "-c", CALLS, str(stubs / "libnccl_stub.so"), str(lib), checks],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["before"] is None and "0 loaded libraries export the counter" in out["why_before"]
    assert out["address"]  # locate() found the array the library itself exports
    assert out["seen"] == [0, 1, 2, 2]  # one per allocation that returned memory; the failed one is not a growth
    assert out["failed"] is None
    assert out["snapshot"] == [2, 22 << 20, 1]  # allocations, their bytes, frees


def test_two_loaded_counters_are_refused(stubs, tmp_path):
    """Two libraries exporting the counter (say, two builds loaded): no way to tell which one the pool uses."""
    counted, _ = ac.counted_source(SOURCES["0.5.11"])
    libs = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.cpp").write_text(counted)
        libs.append(str(tmp_path / f"{name}.so"))
        subprocess.run(["g++", "-std=c++17", "-shared", "-fPIC", "-I", str(stubs), "-o", libs[-1],
                        str(tmp_path / f"{name}.cpp")], check=True)
    code = ("import ctypes, os, sys\nfrom sglang_cp_symm.engine import alloc_counter as ac\n"
            "ctypes.CDLL(sys.argv[1], mode=os.RTLD_GLOBAL)\n[ctypes.CDLL(p) for p in sys.argv[2:]]\n"
            "print(ac.locate())")
    run = subprocess.run([sys.executable, "-c", code, str(stubs / "libnccl_stub.so"), *libs],
                         capture_output=True, text=True, timeout=60)
    assert "(None, '2 loaded libraries export the counter" in run.stdout, run.stderr[-2000:]


def test_counts_read_a_real_buffer_at_its_address():
    cells = (ctypes.c_uint64 * 3)(5, 7 << 20, 1)
    counts = ac.Counts(ctypes.addressof(cells))
    read = counts.reader()
    assert read() == 5 and counts.snapshot() == (5, 7 << 20, 1)
    cells[0] = 6
    assert read() == 6  # the same memory, read again: no copy was taken
