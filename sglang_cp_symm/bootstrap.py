"""Activation on sglang releases without a plugin framework (before 0.5.11), reached from the ``.pth`` file.

Python runs ``sglang_cp_symm_bootstrap.pth`` at the start of every interpreter of
the environment: pip, a tokenizer, a notebook. Its one line reads
``SGLANG_CP_SYMM`` and imports this module only when the switch is not an "off"
value; off, nothing of the package is imported at all.

On, this module still loads nothing: it puts one finder first on ``sys.meta_path``
that does nothing until the process imports sglang's engine package
(``sglang.srt``), which every server, scheduler and engine process does before any
module the plugin patches. Only then does it read the installed release (package
metadata) and, on releases before 0.5.11, apply the plugin (``engine.plugin``).
From 0.5.11 it does nothing, and sglang's own plugin loader calls the entry point,
so that ``SGLANG_PLUGINS`` keeps its meaning. sglang starts its children with
multiprocessing ``spawn``, so the ``.pth`` reaches each of them too.

Nothing here may raise, print a traceback or exit while the interpreter starts:
a broken bootstrap would break every Python program of the image, pip included.
Strict mode stops the engine later, at the import of the engine's modules.
"""

import sys

#: The package whose first import marks an engine process.
ENGINE_PACKAGE = "sglang.srt"
#: The first release that loads plugins through entry points (``sglang.srt.plugins``).
FIRST_WITH_PLUGINS = (0, 5, 11)


class EngineImportTrigger:
    """A ``sys.meta_path`` finder that finds nothing; it only notices the first import of ``sglang.srt``.

    It never removes itself from ``sys.meta_path``: the import system iterates that
    list while it calls ``find_spec``, and a finder that removed itself there would
    make the next finder be skipped for this very import.
    """

    def __init__(self) -> None:
        self.fired = False

    def find_spec(self, name, path=None, target=None):
        if not self.fired and (name == ENGINE_PACKAGE or name.startswith(ENGINE_PACKAGE + ".")):
            self.fired = True
            engine_is_starting()
        return None


def engine_is_starting() -> None:
    """The process imports sglang's engine: apply the plugin if this release has no plugin framework."""
    try:
        from .releases import installed_sglang

        release = installed_sglang()
        if release is not None and tuple(release) >= FIRST_WITH_PLUGINS:
            return
        from .engine.plugin import activate

        activate()
    except SystemExit:  # strict mode: the engine stops at its first import of sglang.srt, never at Python's start
        raise
    except BaseException as exc:  # never break the engine's import over the plugin
        try:
            sys.stderr.write(f"sglang-cp-symm: not applied ({type(exc).__name__}: {str(exc)[:200]})\n")
        except Exception:
            pass


def install() -> None:
    if not any(isinstance(f, EngineImportTrigger) for f in sys.meta_path):
        sys.meta_path.insert(0, EngineImportTrigger())


try:
    install()
except BaseException:  # pragma: no cover - an interpreter must start whatever happens here
    pass
