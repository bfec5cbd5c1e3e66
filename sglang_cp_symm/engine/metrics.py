"""The watchdog's growth count as a Prometheus counter, where sglang's metrics are on.

sglang runs prometheus_client in multiprocess mode and sets
``PROMETHEUS_MULTIPROC_DIR`` before it starts its children (``set_prometheus_multiproc_dir``
in ``utils/common.py``; importing prometheus_client earlier breaks that mode). So the
counter is created only in a process that already has the variable, that is a
scheduler sglang spawned with ``--enable-metrics``; it then appears on the server's
``/metrics`` as ``sglang_cp_symm_pool_growths_total{phase="start"|"warm-up"|"serving"}``.
"""

from __future__ import annotations

import os
from typing import Any

METRIC = "sglang_cp_symm_pool_growths"


class GrowthCounter:
    """The watchdog's growth callback: one Prometheus counter, labelled by phase.

    Made once per watchdog and kept on it (``PoolWatchdog.metric``), across ``uninstall``/``install``:
    prometheus_client refuses a second counter of the same name in one process, and the plugin object
    (one per process) holds the one watchdog that counts."""

    __slots__ = ("counter",)

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    def __call__(self, event: Any) -> None:
        self.counter.labels(phase=event.phase).inc()


def install(watchdog: Any) -> bool:
    """Count the watchdog's growths in a Prometheus counter; False where metrics are off."""
    if watchdog.metric is None:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return False
        try:
            from prometheus_client import Counter
        except ImportError:
            return False
        watchdog.metric = GrowthCounter(Counter(METRIC, "Symmetric-memory pool growths seen by sglang-cp-symm, by "
                                                "phase (start, warm-up, serving); serving should stay 0", ["phase"]))
    if watchdog.metric not in watchdog.on_growth:
        watchdog.on_growth.append(watchdog.metric)
    return True


def uninstall(watchdog: Any) -> None:
    """Stop counting; the counter stays registered, as prometheus_client cannot drop it safely."""
    if watchdog.metric is not None and watchdog.metric in watchdog.on_growth:
        watchdog.on_growth.remove(watchdog.metric)
