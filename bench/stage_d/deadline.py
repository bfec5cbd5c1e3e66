"""Every collective under a deadline: a hang becomes a report and an exit, never a stuck job.

``faulthandler.dump_traceback_later`` runs in a C thread that needs no GIL, so it fires even when the
main thread is stuck inside NCCL or a window registration while holding the GIL (the allocator's
``ncclCommWindowRegister`` runs inside ``torch.empty``). Before each step the rank writes one JSON line to
its progress file (``rank<R>.progress``): the step it is entering. When the deadline passes, the
tracebacks go to the same file and the process exits with status 1; the table step reads the last
line of each rank's file and reports the hang at that step.
"""

from __future__ import annotations

import faulthandler
import json
import os
import time
from contextlib import contextmanager
from typing import Optional

HANG_MARK = "Timeout ("  # faulthandler's own header line: "Timeout (0:02:00)!"


class Progress:
    def __init__(self, path: str, deadline_s: float):
        self.path = path
        self.deadline_s = deadline_s
        self.file = open(path, "a", buffering=1)

    def mark(self, **step) -> None:
        step["t"] = round(time.time(), 3)
        self.file.write(json.dumps(step) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    @contextmanager
    def step(self, **step):
        """Run the block under the deadline; a hang dumps the tracebacks here and exits the process."""
        self.mark(**step)
        faulthandler.dump_traceback_later(self.deadline_s, exit=True, file=self.file)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()

    def close(self) -> None:
        self.mark(step="done")
        self.file.close()


def last_step(path: str) -> Optional[dict]:
    """The last step a rank entered, and whether its deadline fired there."""
    if not os.path.exists(path):
        return None
    last, hung = None, False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("{"):
                try:
                    last = json.loads(line)
                except ValueError:
                    continue
            elif line.startswith(HANG_MARK):
                hung = True
    if last is not None:
        last = dict(last, hung=hung)
    return last
