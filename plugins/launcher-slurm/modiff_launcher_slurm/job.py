"""What one Slurm job runs: the run's command, as a child process, the way the local launcher runs it.

submitit pickles a :class:`RunCommand` in the driver and calls it in the
job on the node. The call starts the job's command (``modiff ablate FILE
--run NAME``) with :func:`modiff.start_job`, so a run is trained by the same
command under every launcher, and returns its exit code.

Two things can end a job before its run ends, and both only cost the steps
after the run's last checkpoint, because a run started again resumes from it
bit for bit:

* **Preemption or the time limit.** submitit's signal (``USR2``) reaches
  every process of the job; submitit calls :meth:`RunCommand.checkpoint`,
  which makes sure the command has ended and hands submitit the same command
  again, and submitit requeues the job (``scontrol requeue``). The requeued
  job starts the command again.
* **scancel, or a node going down.** Slurm signals and then kills the job.
  The call never returns the command's exit code when the command was ended
  by a signal or the job was told to stop: the job ends without a result,
  and the driver's launcher submits the run again (``retries``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import modiff

#: Seconds a job whose command a signal ended waits for Slurm's requeue or kill before it gives up.
STOPPED_WAIT_SECONDS = 120
#: Seconds the command has to end after SIGINT on a requeue before it is killed.
END_SECONDS = 30


class StoppedBySignal(RuntimeError):
    """The run's command was ended by a signal and Slurm neither requeued nor ended the job."""


class RunCommand:
    """A run's job: its command as a child process; submitit's checkpointing requeues it."""

    def __init__(self, job: modiff.RunJob):
        self.job = job
        self._child: subprocess.Popen[bytes] | None = None
        self._told_to_stop = False

    def __getstate__(self) -> dict[str, Any]:
        return {"job": self.job}  # the child process is this job's own, never pickled

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["job"])  # type: ignore[misc]

    def __call__(self) -> int:
        previous = signal.getsignal(signal.SIGTERM)

        def told_to_stop(signum: int, frame: Any) -> None:
            # scancel, preemption, a node shut down: the command gets the signal too (Slurm signals
            # every process of the job); remember it, so its exit code is not taken for the run's
            self._told_to_stop = True
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, told_to_stop)
        self._child = modiff.start_job(self.job)
        code = self._child.wait()
        if code >= 0 and not self._told_to_stop:
            return code
        # Ended by a signal: Slurm is requeueing (submitit's handler exits this process) or ending the job.
        time.sleep(STOPPED_WAIT_SECONDS)
        raise StoppedBySignal(f"the run's command ended with {code} after a signal, and Slurm did not end the job")

    def checkpoint(self) -> Any:
        """Called by submitit on preemption or at the time limit, before it requeues the job:
        the command is ended (it resumes from its last checkpoint) and the same command is what
        submitit requeues (a ``submitit.helpers.DelayedSubmission``)."""
        import submitit

        if self._child is not None and self._child.returncode is None:
            _end(self._child.pid)
        return submitit.helpers.DelayedSubmission(RunCommand(self.job))


def _end(pid: int) -> None:
    """Stop the command and reap it: SIGINT first (it ends its step and keeps a checkpoint, as
    Ctrl-C does), SIGKILL after :data:`END_SECONDS`. Without Popen's methods: submitit calls
    :meth:`RunCommand.checkpoint` from a signal handler, perhaps inside ``Popen.wait``, whose
    lock it would then wait for forever."""
    signals = [signal.SIGINT, signal.SIGKILL]
    deadline = 0.0
    while True:
        try:
            if time.monotonic() >= deadline and signals:
                os.kill(pid, signals.pop(0))
                deadline = time.monotonic() + END_SECONDS
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except (ProcessLookupError, ChildProcessError):  # already ended and reaped
            return
        time.sleep(0.1)
