"""sglang-cp-symm: attention context-parallel all-gathers in NCCL symmetric memory, on every sglang release.

Off unless ``SGLANG_CP_SYMM=1``. The public API is small:

- ``patch()``: apply the plugin to this process (what the entry point does when the switch is on).
- ``unpatch()``: restore everything that was changed.
- ``status()``: what was done, as a dict (release, mode, outcome, each target's state).

This module imports nothing at import time: the ``.pth`` bootstrap and the entry
point import it in every process, and a process that never patches must not pay
for wrapt, the register or the engine side. ``engine/`` is what runs inside
sglang's processes; ``tools/`` is the command line and what runs offline.
"""

__version__ = "0.1.0"


def patch(settings=None, nccl: "str | None" = None) -> dict:
    """Apply the plugin regardless of ``SGLANG_CP_SYMM`` (an explicit call is the opt-in).

    ``settings`` (an ``engine.settings.Settings``) replaces the environment's switches;
    ``nccl`` ("2.30.7") decides the NCCL policy as if that NCCL were loaded (by
    default the library the engine loads is read, once its module imported torch).
    """
    import dataclasses

    from .engine import activation
    from .engine.nccl_policy import given_version
    from .engine.settings import read_settings

    chosen = settings or read_settings()
    if not chosen.enabled:
        chosen = dataclasses.replace(chosen, enabled=True)
    activation.apply(chosen, nccl=None if nccl is None else given_version(nccl))  # a bad ``nccl`` raises before
    return status()


def unpatch() -> None:
    """Take back everything ``patch()`` or the entry point changed in this process."""
    from .engine import activation

    activation.unapply()


def status() -> dict:
    """What the plugin did in this process (see ``engine.report``)."""
    from .engine import activation

    return activation.status()


__all__ = ["__version__", "patch", "unpatch", "status"]
