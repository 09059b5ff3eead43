"""The ``slurm`` launcher: each run of a grid one Slurm job, submitted through submitit.

The driver hands over runs one at a time, but it hands over every run that
is ready in one pass of its loop before it polls any: the launcher holds
them until the first :meth:`SlurmRun.poll` and submits them together, as
one job array per shape (CPUs, GPUs), which is one ``sbatch`` call and one
entry in the queue instead of many.

A job that ends without its run's result (scancel, a node lost, a job that
died) is submitted again, up to ``retries`` times, and says so; the run
resumes from its last checkpoint. A run that failed by itself (its command
exited non-zero) is not: its record says why, and ``modiff ablate`` retries
it on the next call, as under every launcher.

Jobs outlive a killed driver (they are Slurm's, not the driver's children);
each submitted job is written down in the submitit folder, so the driver
started again takes over the jobs still queued or running instead of
submitting their runs twice (a running one it finds writing its run, and
waits for).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import modiff

from .job import RunCommand
from .queue import Queue
from .settings import SlurmSettings

#: Exit code of a run stopped as Ctrl-C stops it (the driver's stop, :meth:`SlurmRun.cancel`).
STOPPED = 130
#: Seconds a job may stay ended without its result file before it counts as lost (a shared
#: filesystem may show the file a little after the job ended).
RESULT_GRACE_SECONDS = 5.0
#: Seconds a submitted job may be missing from squeue before it counts as lost.
MISSING_GRACE_SECONDS = 30.0


class SlurmRun:
    """One run's job in Slurm (and the jobs that retry it): what the driver polls."""

    def __init__(self, launcher: SlurmLauncher, job: modiff.RunJob):
        self.launcher = launcher
        self.job = job
        self.node: str | None = None
        self.error: str | None = None
        self.job_id: str | None = None
        self.attempt = 0
        self._submitit_job: Any = None
        self._code: int | None = None
        self._cancelled = False
        self._ended_since: float | None = None
        self._missing_since: float | None = None

    # -- what the launcher tells it ---------------------------------------------------

    def submitted(self, submitit_job: Any) -> None:
        self._submitit_job = submitit_job
        self.job_id = str(submitit_job.job_id)
        self._ended_since = self._missing_since = None
        self.launcher.note_job(self.job.name, self.job_id)

    def refused(self, reason: str) -> None:
        self.error = reason
        self._code = 1

    # -- the driver's side ----------------------------------------------------------

    def poll(self) -> int | None:
        if self._code is not None:
            return self._code
        self.launcher.flush()
        if self._code is not None or self._submitit_job is None:
            return self._code
        outcome = self._result()
        if outcome is not None:
            kind, value = outcome
            if kind == "success":
                self._code = int(value)
                return self._code
            self._lost(f"ended with an error ({str(value).strip().splitlines()[-1]})")
            return self._code
        state = self.launcher.queue.state(self.job_id or "")
        now = time.monotonic()
        if state is None:
            if self.launcher.queue.reachable:  # an unreachable controller is waited for, not a loss
                self._missing_since = self._missing_since or now
                if now - self._missing_since > MISSING_GRACE_SECONDS:
                    self._lost("is no longer listed by Slurm")
            return self._code
        self._missing_since = None
        if state.node:
            self.node = state.node
        if state.ended:
            self._ended_since = self._ended_since or now
            if self._cancelled or now - self._ended_since > RESULT_GRACE_SECONDS:
                self._lost(f"ended {state.state}")
        else:
            self._ended_since = None
        return self._code

    def cancel(self) -> None:
        """scancel: the command is signalled and ends; the run resumes from its last checkpoint next time."""
        self._cancelled = True
        if self.job_id is None:
            self.launcher.forget(self)
            self._code = STOPPED
            return
        subprocess.run(["scancel", self.job_id], capture_output=True, timeout=60)

    # -- inside -------------------------------------------------------------------

    def _result(self) -> tuple[str, Any] | None:
        """submitit's result file of the current job: ("success", exit code) or ("error", traceback)."""
        from submitit.core.utils import pickle_load

        path = Path(self._submitit_job.paths.result_pickle)
        if not path.is_file():
            return None
        try:
            outcome = pickle_load(path)
        except (OSError, EOFError, ValueError):  # still being moved into place
            return None
        return outcome[0], outcome[1]

    def _lost(self, how: str) -> None:
        """The job ended before the run did: submit it again, or give up and say why."""
        if self._cancelled:
            self._code = STOPPED
            return
        settings = self.launcher.settings
        what = f"Slurm job {self.job_id} {how} before its run finished"
        if self.attempt < settings.retries:
            self.attempt += 1
            self.launcher.say(self, f"{what}; submitting it again (retry {self.attempt} of {settings.retries})")
            self._submitit_job, self.job_id = None, None
            self.launcher.resubmit(self)
            return
        self.error = f"{what}, after {settings.retries} retries; see {self.job.log_path}"
        self.launcher.say(self, self.error)
        self._code = 1


class SlurmLauncher:
    """Runs of a grid as Slurm jobs: ``max_jobs`` (or ``--jobs``) in the queue at once."""

    def __init__(self, settings: SlurmSettings, context: modiff.LaunchContext):
        self.settings = settings
        self.folder = Path(settings.folder) if settings.folder else Path(context.runs_dir) / ".slurm"
        self.slots = context.jobs or settings.max_jobs
        self.cpus_per_run = settings.cpus_per_run
        self.queue = Queue()
        self.job_name = f"modiff-{Path(context.runs_dir).name}"
        self._log: Callable[[str], None] | None = context.log
        self._unsent: list[SlurmRun] = []

    def submit(self, job: modiff.RunJob) -> SlurmRun:
        run = SlurmRun(self, job)
        if not self._adopt(run):
            self._unsent.append(run)
        return run

    def resubmit(self, run: SlurmRun) -> None:
        self._unsent.append(run)

    def forget(self, run: SlurmRun) -> None:
        if run in self._unsent:
            self._unsent.remove(run)

    def close(self) -> None:
        """Nothing to release: the jobs are Slurm's, and every one has ended when the driver closes."""

    def flush(self) -> None:
        """Submit the runs handed over since the last flush: one job array per shape."""
        if not self._unsent:
            return
        unsent, self._unsent = self._unsent, []
        shapes: dict[tuple[int, int], list[SlurmRun]] = {}
        for run in unsent:
            shapes.setdefault((run.job.cpus, run.job.gpus), []).append(run)
        for (cpus, gpus), runs in shapes.items():
            executor = self._executor(cpus, gpus)
            try:
                with executor.batch():
                    jobs = [executor.submit(RunCommand(run.job)) for run in runs]
            except Exception as exc:  # noqa: BLE001 (sbatch's refusal is the runs' error, said once each)
                message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                for run in runs:
                    run.refused(f"sbatch refused the run's job: {message}")
                continue
            for run, submitted in zip(runs, jobs):
                run.submitted(submitted)

    def _executor(self, cpus: int, gpus: int) -> Any:
        import submitit

        s = self.settings
        executor = submitit.SlurmExecutor(folder=self.folder / "%j")
        parameters: dict[str, Any] = {
            "job_name": self.job_name,
            "time": s.time,
            "nodes": 1,
            "ntasks_per_node": 1,
            "cpus_per_task": cpus,
            "setup": list(s.setup),
            "additional_parameters": dict(s.sbatch),
        }
        optional = {"partition": s.partition, "account": s.account, "qos": s.qos,
                    "gpus_per_node": gpus or None, "mem": f"{round(s.mem_gb * 1024)}M" if s.mem_gb else None}
        parameters.update({k: v for k, v in optional.items() if v is not None})
        executor.update_parameters(**parameters)
        return executor

    # -- jobs that outlive their driver ------------------------------------------------

    def _record(self, name: str) -> Path:
        return self.folder / "runs" / f"{name}.json"

    def note_job(self, name: str, job_id: str) -> None:
        """Write down ``name``'s job, for a driver started again after this one was killed."""
        path = self._record(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        modiff.atomic_write_text(path, json.dumps({"job_id": job_id, "submitted_at": time.time()}))

    def _adopt(self, run: SlurmRun) -> bool:
        """Take over the job an earlier driver submitted for this run, if Slurm still holds it."""
        try:
            job_id = str(json.loads(self._record(run.job.name).read_text())["job_id"])
        except (OSError, ValueError, KeyError):
            return False
        state = self.queue.state(job_id)
        if state is None or state.ended:
            return False
        import submitit

        run.submitted(submitit.SlurmJob(folder=self.folder / "%j", job_id=job_id))
        self.say(run, f"Slurm job {job_id}, submitted by an earlier driver, is {state.state}: taken over")
        return True

    def say(self, run: SlurmRun, line: str) -> None:
        """Tell the driver's output and the run's log what the launcher did on its own."""
        text = f"{run.job.name}: {line}"
        try:
            with open(run.job.log_path, "a", encoding="utf-8") as log:
                log.write(f"modiff-launcher-slurm: {text}\n")
        except OSError:
            pass
        if self._log is not None:
            self._log(text)
        else:
            print(text, file=sys.stderr, flush=True)
