"""Stand-in for sgl-kernel, which ships CUDA kernels only and has no CPU build.

sglang 0.5.6-0.5.7's ``sglang/srt/_custom_ops.py`` reads ``sgl_kernel.allreduce`` at import
(line 20), and ``GroupCoordinator.__init__`` imports that module (parallel_state.py 0.5.6:329),
so no group can be built on CPU without it. Nothing the CP all-gathers run calls it: every
attribute is a function that raises, so a test that reached a kernel would fail loudly.
ci/releases.txt names it (``stub:sgl_kernel``) for the releases that need it; ci/envs.sh copies it
into their environment only.
"""

import types


def _unavailable(name):
    def call(*args, **kwargs):
        raise RuntimeError(f"sgl_kernel.{name} needs CUDA (CPU stand-in, tests/stubs/optional/sgl_kernel)")

    return call


class _Kernels(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _unavailable(f"{self.__name__.split('.', 1)[-1]}.{name}")


allreduce = _Kernels("sgl_kernel.allreduce")
