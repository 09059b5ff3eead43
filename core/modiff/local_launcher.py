"""The ``local`` launcher: each run of a grid a process on this machine (``--jobs N``).

Two one-thread processes do nearly twice the work of one two-thread process
on a small model, so ``--jobs N`` gives each of N processes an equal share of
the cores. :func:`start_job` is also how other launchers run a job on their
worker (the Ray plugin's task calls it), so a job is started one way
everywhere: its own session (a Ctrl-C at the terminal reaches the driver,
which stops each job once), its log, and the end of its parent as its end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .plugins import NoSettings
from .protocols import LaunchContext, RunJob

#: ``prctl`` option: the signal the kernel sends a process when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """An equal share of the cores this process may use."""
    return max(1, cores() // jobs)


def _end_with_parent(parent: int) -> None:
    """In a job's process before it runs: end it (SIGTERM) when ``parent``, the
    driver or a Ray worker, dies, however it dies (``PR_SET_PDEATHSIG``, Linux
    only). A killed driver then leaves no job training behind it, and a killed
    Ray worker none beside the retry Ray starts; runs resume from their last
    checkpoints."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(143)


def start_job(job: RunJob, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Run ``job``'s command as a child of this process: in ``job.cwd``, with
    ``job.env`` over this process's environment, output to ``log_path``
    (default ``job.log_path``), in a session of its own, ending when this
    process ends."""
    parent = os.getpid()
    env = {**os.environ, **job.env}
    path = log_path or job.log_path
    with open(path, "ab") as log_file:
        return subprocess.Popen(
            list(job.argv),
            cwd=job.cwd,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _end_with_parent(parent),  # noqa: PLW1509 (one prctl call, no locks taken)
        )


class LocalRun:
    """A job's process on this machine."""

    def __init__(self, process: subprocess.Popen[bytes]):
        self.process = process
        self.node: str | None = os.uname().nodename
        self.error: str | None = None

    def poll(self) -> int | None:
        return self.process.poll()

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)


class LocalLauncher:
    """``jobs`` processes at once on this machine, each with an equal share of the cores."""

    def __init__(self, jobs: int):
        self.slots = jobs
        self.cpus_per_run = threads_per_job(jobs)

    def submit(self, job: RunJob) -> LocalRun:
        return LocalRun(start_job(job))

    def close(self) -> None:
        """Nothing to release: every job ended before the driver closes the launcher."""


def build_local(settings: NoSettings, context: LaunchContext) -> LocalLauncher:
    """This machine: one process per run, --jobs N at once with 1/N of the cores each (the default)."""
    return LocalLauncher(context.jobs or 1)
