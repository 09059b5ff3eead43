"""Runs as Ray tasks: :class:`RayLauncher` (the driver's side) and :func:`run_job` (the worker's).

A task runs the run's command as a child process that ends with its worker
(:func:`modiff.start_job`), so a worker killed mid-run leaves nothing
training behind it; Ray then runs the task again (``retries``) on a node
with room, and the command resumes the run from its last checkpoint. A
child killed by a signal (not by a cancel) counts as a dead worker too: the
task raises :class:`JobKilled`, which Ray retries. A run that fails on its
own (exit code 1: a loss gone NaN) is not retried: it would fail again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass

import ray
from ray.exceptions import RayError, TaskCancelledError

import modiff

from .settings import RaySettings

#: A job stopped by Ctrl-C (a cancel): it kept its checkpoint.
STOPPED = 130


class JobKilled(RuntimeError):
    """The run's process died of a signal it did not ask for: Ray runs the task again."""


@dataclass(frozen=True)
class Ended:
    """What a task returns: the command's exit code, where and when it ran, and
    why it could not run when the run's log cannot say (no runs folder there)."""

    code: int
    node: str
    started_at: float
    error: str | None = None


def run_job(job: modiff.RunJob) -> Ended:
    """In a Ray worker: run ``job``'s command to its end (the body of the task)."""
    started = time.time()
    node = ray.get_runtime_context().get_node_id()
    folder = job.log_path.parent.parent  # logs live in the grid's folder: .logs/NAME.log
    if not folder.is_dir():
        return Ended(2, node, started, f"the runs folder {folder} does not exist on Ray node {node} "
                     f"({socket.gethostname()}): runs_dir must be on storage every node mounts, at the same path")
    process = modiff.start_job(job)
    try:
        code = process.wait()
    except KeyboardInterrupt:  # ray.cancel: stop the run as Ctrl-C does, so it keeps a checkpoint
        process.send_signal(signal.SIGINT)
        return Ended(process.wait(), node, started)
    if code < 0 and -code != signal.SIGINT:
        raise JobKilled(f"{job.name}: its process was killed by signal {-code} on node {node}")
    return Ended(code, node, started)


class RayRun:
    """A run submitted as a Ray task."""

    def __init__(self, ref: ray.ObjectRef, name: str):
        self.ref = ref
        self.name = name
        self.node: str | None = None
        self.error: str | None = None
        self.started_at: float | None = None
        self.code: int | None = None

    def poll(self) -> int | None:
        if self.code is not None:
            return self.code
        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            ended: Ended = ray.get(self.ref)
        except TaskCancelledError:
            self.code = STOPPED
            return self.code
        except RayError as exc:  # retries spent, or the cluster lost: the run resumes when the grid runs again
            self.error = f"Ray gave up on the run's task: {str(exc).strip().splitlines()[0]}"
            self.code = 1
            return self.code
        self.node, self.started_at, self.error, self.code = ended.node, ended.started_at, ended.error, ended.code
        return self.code

    def cancel(self) -> None:
        if self.code is None:
            ray.cancel(self.ref)


class RayLauncher:
    """Each run a task on a Ray cluster: a local instance, or ``address``."""

    def __init__(self, settings: RaySettings, context: modiff.LaunchContext):
        self.settings = settings
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        self.started_instance = settings.address is None
        ray.init(
            address=settings.address or "local",  # "local": always a new instance, never someone else's cluster
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
        self.cpus_per_run = settings.cpus
        fits = max(1, int(ray.cluster_resources().get("CPU", 1)) // settings.cpus)
        self.slots = settings.slots or min(fits, context.jobs or fits)
        self.task = ray.remote(max_retries=settings.retries, retry_exceptions=[JobKilled])(run_job)

    def submit(self, job: modiff.RunJob) -> RayRun:
        ref = self.task.options(num_cpus=job.cpus, num_gpus=job.gpus, name=f"modiff:{job.name}").remote(job)
        return RayRun(ref, job.name)

    def close(self) -> None:
        """Leave the cluster (and stop the instance this launcher started)."""
        ray.shutdown()
