"""The driver's scheduling loop: a grid's runs handed to a launcher, a few at a time.

The driver is the only coordinator, whichever launcher places the runs
(:class:`modiff.protocols.Launcher`): runs start in file order, at most the
launcher's ``slots`` at once, except that one which could share a stage
with a running run waits until that run has kept it (then it starts from
it, :mod:`modiff.stage_cache`). What a run *is* (its files, its record, its
report) is the caller's: this loop knows runs by name, stage keys and the
job that trains them, and tells the caller through :class:`GridEvents`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from .protocols import LaunchedRun, Launcher, RunJob

#: Seconds between two looks at the jobs and at runs being written by others.
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class PendingRun:
    """A run to train: its name, the job that trains it, and its stage keys
    (what it could share with another run; empty when stages are not shared)."""

    name: str
    job: RunJob
    keys: frozenset[str]


class GridEvents(Protocol):
    """What the loop asks and tells the caller (the ablation driver)."""

    def tick(self) -> None:
        """Once a loop, about every :data:`POLL_SECONDS` (the progress display)."""

    def ready(self, run: PendingRun) -> bool | None:
        """Whether ``run`` may start now: ``False`` while another process writes
        it (asked again later), ``None`` when that process finished it (nothing
        to start)."""

    def started(self, run: PendingRun, handle: LaunchedRun) -> None:
        """``run`` was handed to the launcher."""

    def ended(self, run: PendingRun, handle: LaunchedRun, code: int) -> None:
        """``run``'s job ended with exit code ``code``."""


#: Exit code of a job stopped by Ctrl-C (it kept a checkpoint): the grid stops too.
STOPPED = 130


def run_grid(
    launcher: Launcher,
    pending: Iterable[PendingRun],
    events: GridEvents,
    must_wait: Callable[[frozenset[str], list[frozenset[str]]], bool] | None = None,
) -> None:
    """Train every run of ``pending`` through ``launcher``; returns when all ended.

    ``must_wait(keys, running_keys)`` says whether a run should wait for a
    stage a running run could still keep (``None``: stages are not shared).
    On a stop (Ctrl-C here, or a job that exited 130) every running job is
    cancelled and waited for, so each keeps a checkpoint, then
    :class:`KeyboardInterrupt` goes on to the caller.
    """
    todo = list(pending)
    running: dict[str, tuple[PendingRun, LaunchedRun]] = {}
    try:
        while todo or running:
            events.tick()
            for name, (run, handle) in list(running.items()):
                code = handle.poll()
                if code is None:
                    continue
                del running[name]
                if code == STOPPED:
                    raise KeyboardInterrupt
                events.ended(run, handle, code)
            for run in list(todo):
                if len(running) >= launcher.slots:
                    break
                if must_wait is not None and must_wait(run.keys, [r.keys for r, _ in running.values()]):
                    continue  # a running run trains a stage this one can share: wait for it
                answer = events.ready(run)
                if answer is False:
                    continue
                todo.remove(run)
                if answer is None:
                    continue
                handle = launcher.submit(run.job)
                running[run.name] = (run, handle)
                events.started(run, handle)
            time.sleep(POLL_SECONDS)
    finally:
        _stop(running.values())


def _stop(running: Iterable[tuple[PendingRun, LaunchedRun]]) -> None:
    """After the loop: a job still running (only on a stop) is asked to stop and
    waited for, so that it ends its step and keeps a checkpoint."""
    handles = [handle for _, handle in running]
    for handle in handles:
        handle.cancel()
    for handle in handles:
        while handle.poll() is None:
            time.sleep(POLL_SECONDS / 5)
