"""Options of the ``mlflow`` tracker, ``[track.mlflow]`` (pydantic only: cheap to import)."""

from __future__ import annotations

from pydantic import Field

import modiff


class MlflowSettings(modiff.ComponentSettings):
    """Where the run is tracked and how long a server may keep training waiting."""

    tracking_uri: str | None = Field(
        None,
        description=(
            "MLflow tracking URI (a team's server, http://host:5000, or another store). Unset: the "
            "MLFLOW_TRACKING_URI environment variable, else a SQLite file in the runs folder, "
            "sqlite:///<runs_dir>/mlflow.db."
        ),
    )
    experiment: str = Field(
        "modiff",
        min_length=1,
        description="The MLflow experiment of a run that belongs to no group ([track] group; an ablation's name wins).",
    )
    artifact_location: str | None = Field(
        None,
        description=(
            "Where a new experiment keeps its artifacts. Unset: beside a SQLite store's file "
            "(<folder>/mlflow-artifacts), else the server's default."
        ),
    )
    http_retries: int = Field(
        2,
        ge=0,
        description=(
            "Retries of a request to a tracking server (MLflow's MLFLOW_HTTP_REQUEST_MAX_RETRIES): a server "
            "that is down costs training a few seconds once, then the tracker is dropped."
        ),
    )
    http_timeout: int = Field(
        10, ge=1, description="Whole seconds a request to a tracking server may take (MLFLOW_HTTP_REQUEST_TIMEOUT)."
    )
