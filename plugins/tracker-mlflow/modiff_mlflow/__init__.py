"""MLflow tracker for modiff: ``[track] plugins = ["mlflow"]``.

One MLflow run per modiff run: the resolved settings as parameters, every
scalar at its step, sample grids and trajectories as images, the run's result
files as artifacts. An ablation's runs share one experiment, named after the
ablation, each tagged with its variant and seed. mlflow is imported only when
a run is tracked, so listing plugins stays fast.

MLflow's usage telemetry is switched off here, before mlflow can be imported
by anything of this plugin: a training run sends nothing anywhere but to the
tracking store it was given.
"""

from __future__ import annotations

import os

import modiff

from .settings import MlflowSettings

# Before mlflow's first import: its telemetry client reads these when it is imported.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("DO_NOT_TRACK", "true")

__all__ = ["MlflowSettings", "build_mlflow", "register_trackers"]


def build_mlflow(settings: MlflowSettings, run: modiff.TrackedRun) -> modiff.Tracker:
    """An MLflow tracker for ``run`` (it connects when the core starts it)."""
    from .tracker import MlflowTracker

    return MlflowTracker(settings)


@modiff.hookimpl
def register_trackers(register: modiff.Register) -> None:
    register("mlflow", build_mlflow, MlflowSettings)
