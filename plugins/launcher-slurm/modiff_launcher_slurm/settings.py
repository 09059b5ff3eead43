"""Options of the ``slurm`` launcher: an ablation file's ``[launcher]`` table (pydantic only: cheap to import)."""

from __future__ import annotations

from pydantic import Field

import modiff


class SlurmSettings(modiff.ComponentSettings):
    """What every run's Slurm job asks for, and how often a lost job is submitted again."""

    partition: str | None = Field(
        None, description="Slurm partition of the jobs (sbatch --partition); unset: the cluster's default."
    )
    time: int = Field(
        240,
        ge=1,
        description=(
            "Minutes one job may run (sbatch --time). A run longer than that is not lost: shortly before the "
            "limit the job is requeued and the run resumes from its last checkpoint."
        ),
    )
    account: str | None = Field(None, description="Account the jobs are charged to (sbatch --account).")
    qos: str | None = Field(None, description="Quality of service of the jobs (sbatch --qos).")
    cpus_per_run: int = Field(
        1,
        ge=1,
        description=(
            "CPUs of each job, and the threads its run trains with. A run's stage keys and bits depend on its "
            "thread count: to compare with a local grid, give the threads that grid's runs had."
        ),
    )
    mem_gb: float | None = Field(
        None, gt=0, description="Memory of each job in GB (sbatch --mem); unset: the cluster's default."
    )
    max_jobs: int = Field(
        64,
        ge=1,
        description="Runs in Slurm's queue at once (submitted, pending or running); --jobs N on the command line wins.",
    )
    retries: int = Field(
        2,
        ge=0,
        description=(
            "Times a run whose job ended before the run did (scancel, node failure, a job that died) is "
            "submitted again; it resumes from its last checkpoint. A run that itself failed is not retried."
        ),
    )
    folder: str | None = Field(
        None,
        description=(
            "submitit's folder (job scripts, pickles, Slurm's logs), on storage every node mounts; "
            "unset: .slurm in the ablation's output folder."
        ),
    )
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines each job runs before the run (e.g. module load ..., source .venv/bin/activate).",
    )
    sbatch: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description=(
            "Further sbatch options, the name without dashes = its value "
            "(e.g. constraint = \"a100\", exclude = \"node7\")."
        ),
    )
