"""TensorBoard tracker for modiff (``[track] plugins = ["tensorboard"]``).

Registers the tracker ``tensorboard``: event files in TensorBoard's own
format, written by ``torch.utils.tensorboard.SummaryWriter`` into the run
folder, so that ``tensorboard --logdir runs/`` shows every run under its
name. torch's writer and the ``tensorboard`` package are imported inside the
factory, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .settings import TensorBoardSettings

__all__ = ["TensorBoardSettings", "build_tensorboard", "register_trackers"]


def build_tensorboard(settings: TensorBoardSettings, run: modiff.TrackedRun) -> Any:
    """Event files in the run folder for TensorBoard: scalars, sample grids, trajectories, settings."""
    from .tracker import TensorBoardTracker

    return TensorBoardTracker(settings)


@modiff.hookimpl
def register_trackers(register: modiff.Register) -> None:
    register("tensorboard", build_tensorboard, TensorBoardSettings)
