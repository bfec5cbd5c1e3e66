"""Activation for sglang releases without a plugin framework (0.5.10), run from a ``.pth`` file.

Python executes ``sglang_cp_symm_bootstrap.pth`` at the start of every interpreter
of the environment, and sglang starts its children with multiprocessing ``spawn``,
so this reaches the main process and every scheduler. It returns at once unless
``SGLANG_CP_SYMM`` is set to something other than an "off" value, and it defers
to the entry point on releases that have one (0.5.11+), so that ``SGLANG_PLUGINS``
keeps its meaning there. It never raises: a broken bootstrap must not break
every Python program in the environment.
"""

import os

_OFF = ("", "0", "false", "no", "off")


def _run() -> None:
    if os.environ.get("SGLANG_CP_SYMM", "").strip().lower() in _OFF:
        return
    from .versions import installed_sglang

    release = installed_sglang()
    if release is None or release >= (0, 5, 11):
        return
    from .plugin import activate

    activate()


try:
    _run()
except SystemExit:
    raise
except Exception:  # pragma: no cover - defensive
    pass
