"""Slurm launcher for modiff: ``[launcher] name = "slurm"`` or ``modiff ablate FILE --launcher slurm``.

Each run of an ablation grid becomes a Slurm job, submitted through
submitit: the runs the driver hands over together go as one job array; each
job asks for the run's CPUs (and a GPU when the run's device is CUDA) and
the ``[launcher]`` table's partition, time, account; it runs the same
command the local launcher runs (:mod:`.job`). Preemption and the time limit
requeue the job, scancel and lost nodes make the launcher submit it again
(:mod:`.launcher`); either way the run resumes from its last checkpoint,
bit for bit. The runs folder, the stage cache and submitit's folder must be
on storage every node mounts. submitit is imported only when a grid is
submitted, so listing plugins stays fast.
"""

from __future__ import annotations

import modiff

from .settings import SlurmSettings

__all__ = ["SlurmSettings", "build_slurm", "register_launchers"]


def build_slurm(settings: SlurmSettings, context: modiff.LaunchContext) -> modiff.Launcher:
    """Slurm: each run a job (job arrays, requeue on preemption, retries), through submitit."""
    from .launcher import SlurmLauncher

    return SlurmLauncher(settings, context)


@modiff.hookimpl
def register_launchers(register: modiff.Register) -> None:
    register("slurm", build_slurm, SlurmSettings)
