"""Stand-in for ``sgl_kernel``, sglang's CUDA kernel package, which cannot be installed on a CPU machine.

Not on the default test path: only tests that import sglang's scheduling code on
releases whose module-level imports reach it (0.5.8-0.5.10: ``layers/moe/moe_runner/
deep_gemm.py``, ``mem_cache/memory_pool_host.py``) put ``tests/stubs/cuda_only`` on the
path. Every name (and every submodule, ``sgl_kernel.kvcacheio`` ...) exists so that those
imports succeed; calling any of them raises, so a scheduling path that really used a
CUDA kernel would fail the test instead of being silently faked.
"""

import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+cpu-stub"
__path__: list = []


class CudaOnly:
    """A name of sgl_kernel: importable, never callable."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return CudaOnly(f"{self._name}.{name}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"sgl_kernel stub: {self._name} is a CUDA kernel and was called on the CPU")

    def __repr__(self) -> str:
        return f"<sgl_kernel stub {self._name}>"


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return CudaOnly(f"sgl_kernel.{name}")


class _Submodule(types.ModuleType):
    __path__: list = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return CudaOnly(f"{self.__name__}.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.startswith("sgl_kernel."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Submodule(spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder())
