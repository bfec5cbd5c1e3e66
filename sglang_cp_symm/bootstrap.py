"""Activation on sglang releases without a plugin framework (before 0.5.11), reached from the ``.pth`` file.

Python runs ``sglang_cp_symm_bootstrap.pth`` at the start of every interpreter of
the environment: pip, a tokenizer, a notebook. Its one line reads
``SGLANG_CP_SYMM`` and imports this module only when the switch is not an "off"
value; off, nothing of the package is imported at all.

On, this module still loads nothing: it puts one finder first on ``sys.meta_path``
that does nothing until the process imports one of the engine modules the plugin
patches or hooks (``ENGINE_MODULES``; ``import sglang`` alone imports none of them).
Only then does it read the installed release (package metadata) and, on releases
before 0.5.11, apply the plugin (``engine.plugin``), which registers its post-import
hooks before that module's body runs. From 0.5.11 it does nothing, and sglang's own
plugin loader calls the entry point, so that ``SGLANG_PLUGINS`` keeps its meaning.
sglang starts its children with multiprocessing ``spawn``, so the ``.pth`` reaches
each of them too.

Nothing here may raise, print a traceback or exit while the interpreter starts:
a broken bootstrap would break every Python program of the image, pip included.
Strict mode stops the engine later, at the import of the engine's modules.
"""

import sys

#: Every module the register names (targets, the pool fix, the warm-up and watchdog hooks), on any release;
#: kept here, not read from the register, because reading the register is what must not happen before one of
#: them is imported. tests/test_bootstrap.py checks that this covers the register.
ENGINE_MODULES = frozenset({
    "sglang.srt.layers.attention.nsa.utils",
    "sglang.srt.layers.utils.cp_utils",
    "sglang.srt.layers.cp.zigzag",
    "sglang.srt.layers.cp.interleave",
    "sglang.srt.distributed.device_communicators.pynccl_allocator",
    "sglang.srt.entrypoints.warmup",
    "sglang.srt.server_args",
    "sglang.srt.managers.tokenizer_manager",
    "sglang.srt.managers.scheduler",
})
#: The first release that loads plugins through entry points (``sglang.srt.plugins``).
FIRST_WITH_PLUGINS = (0, 5, 11)


class EngineImportTrigger:
    """A ``sys.meta_path`` finder that notices the first import of one of ``ENGINE_MODULES``.

    At that moment it applies the plugin, whose wrapt post-import hooks must see this
    very import too: wrapt's finder was only now put first on ``sys.meta_path``, after
    the import system had passed that position, so the trigger hands back the spec
    the (now complete) finder list gives, with wrapt's loader. Every other call
    finds nothing. It never removes itself from ``sys.meta_path``: the import system
    iterates that list while it calls ``find_spec``, and a finder that removed itself
    there would make the next finder be skipped for this very import.
    """

    def __init__(self) -> None:
        self.fired = False

    def find_spec(self, name, path=None, target=None):
        if self.fired or name not in ENGINE_MODULES:
            return None
        self.fired = True
        if not engine_is_starting():
            return None
        import importlib.util

        return importlib.util.find_spec(name)


def engine_is_starting() -> bool:
    """An engine module is being imported: apply the plugin if this release has no plugin framework.

    True when the plugin was applied here.
    """
    try:
        from .releases import installed_sglang

        release = installed_sglang()
        if release is not None and tuple(release) >= FIRST_WITH_PLUGINS:
            return False
        from .engine.plugin import activate

        return activate()
    except SystemExit:  # strict mode: the engine stops at the import of its module, never at Python's start
        raise
    except BaseException as exc:  # never break the engine's import over the plugin
        try:
            sys.stderr.write(f"sglang-cp-symm: not applied ({type(exc).__name__}: {str(exc)[:200]})\n")
        except Exception:
            pass
        return False


def install() -> None:
    if not any(isinstance(f, EngineImportTrigger) for f in sys.meta_path):
        sys.meta_path.insert(0, EngineImportTrigger())


try:
    install()
except BaseException:  # pragma: no cover - an interpreter must start whatever happens here
    pass
