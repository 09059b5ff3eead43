"""The training time a run reports: wall seconds spent training, kept across
resumes (checkpoints store them), with sampling and evaluation paused out, so
that learning curves of runs that were interrupted or evaluated often compare."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class TrainingClock:
    """Seconds spent training so far, counting only inside :meth:`counting`
    and outside :meth:`paused`."""

    def __init__(self, already: float = 0.0):
        self.already = already
        self.running_since: float | None = None
        self.paused_for = 0.0

    def seconds(self) -> float:
        running = 0.0 if self.running_since is None else time.perf_counter() - self.running_since - self.paused_for
        return self.already + running

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        self.running_since, self.paused_for = time.perf_counter(), 0.0
        try:
            yield
        finally:
            self.already = self.seconds()
            self.running_since = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.paused_for += time.perf_counter() - t0
