"""Train a toy run with the mlflow tracker and SIGKILL it once MLflow holds a chosen step.

    python _kill_at_step.py STEP -- train settings.toml --quiet

The process kills itself right after the tracker has written the run-wide
step ``STEP`` to MLflow: a real, uncatchable kill between two checkpoints,
so MLflow holds steps the checkpoint does not, which a resume takes again.
The toy components (``modiff.testing.toys``) are registered beside the
installed plugins, as the tests' ``use_registry`` does in process.
"""

from __future__ import annotations

import os
import signal
import sys

from modiff.plugins import set_registry
from modiff.testing import plugin_registry
from modiff.testing.toys import ToyPlugin
from modiff_mlflow.tracker import MlflowTracker


def arm(step: int) -> None:
    real = MlflowTracker.log_scalars

    def log_then_die(self, at, values):  # type: ignore[no-untyped-def]
        real(self, at, values)
        if at == step:
            os.kill(os.getpid(), signal.SIGKILL)

    MlflowTracker.log_scalars = log_then_die  # type: ignore[method-assign]


if __name__ == "__main__":
    step, dashes, *argv = sys.argv[1:]
    assert dashes == "--", "usage: _kill_at_step.py STEP -- modiff-args..."
    arm(int(step))
    set_registry(plugin_registry(ToyPlugin(), entry_points=True))
    from modiff.cli import main

    sys.exit(main(argv))
