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
from typing import Any, List

METRIC = "sglang_cp_symm_pool_growths"
_counter: List[Any] = []  # created once per process: prometheus_client refuses a second of the same name


def _count(event: Any) -> None:
    _counter[0].labels(phase=event.phase).inc()


def install(watchdog: Any) -> bool:
    """Count the watchdog's growths in a Prometheus counter; False where metrics are off."""
    if not _counter:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return False
        try:
            from prometheus_client import Counter
        except ImportError:
            return False
        _counter.append(Counter(METRIC, "Symmetric-memory pool growths seen by sglang-cp-symm, by phase "
                                "(start, warm-up, serving); serving should stay 0", ["phase"]))
    if _count not in watchdog.on_growth:
        watchdog.on_growth.append(_count)
    return True


def uninstall(watchdog: Any) -> None:
    """Stop counting; the counter stays registered, as prometheus_client cannot drop it safely."""
    if _count in watchdog.on_growth:
        watchdog.on_growth.remove(_count)
