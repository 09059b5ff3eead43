"""What training tells the outside world besides its checkpoints: metrics,
sample grids, evaluations, a progress bar and the dataset's report.

All of it happens on the main process only, and sampling and evaluation are
paused out of the training clock, so the seconds a learning curve plots are
training alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from ..assembly import Components
from ..distributed import World
from ..files import atomic_write_json
from ..runs import RunDir
from ..tracking import Tracking
from .clock import TrainingClock
from .optim import EMA


class ProgressBar(Protocol):
    """What the loop uses of a progress bar (tqdm's, or one that shows nothing)."""

    def update(self, n: int = 1) -> Any: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


class TrainingReporter:
    """Metrics, samples, evaluations and messages of one training, into its run directory."""

    def __init__(
        self,
        components: Components,
        run: RunDir,
        world: World,
        clock: TrainingClock,
        *,
        progress: bool = True,
        on_sample: Callable[[str, int], Mapping[str, Path] | None] | None = None,
        on_evaluate: Callable[[], dict[str, Any]] | None = None,
        tracking: Tracking | None = None,
    ):
        self.components = components
        self.run = run
        self.world = world
        self.clock = clock
        self.progress = progress
        self.on_sample = on_sample
        self.on_evaluate = on_evaluate
        #: The run's trackers: every metric logged and every picture ``on_sample`` names reach them.
        self.tracking = tracking or Tracking()

    def message(self, stage: str, message: str) -> None:
        if self.world.is_main and self.progress:
            print(f"[{stage}] {message}", flush=True)

    def log(self, record: dict[str, Any]) -> None:
        if self.world.is_main:
            self.run.append_metrics({**record, "time": time.time()})
            self.tracking.record(record)

    def keep_metrics(self, stages_done: list[str], stage: str | None = None, step: int | None = None) -> None:
        """Drop the metrics a restart will log again: keep those of finished stages
        and, when ``stage`` resumes at ``step``, its records up to that step."""
        if not self.world.is_main:
            return
        done = set(stages_done)
        if step is None:
            self.run.keep_metrics(lambda r: r.get("stage") in done)
        else:
            self.run.keep_metrics(
                lambda r: r.get("stage") in done or (r.get("stage") == stage and int(r.get("step", 0)) <= step)
            )

    def bar(self, stage: str, total: int, initial: int) -> ProgressBar:
        """A progress bar for ``stage`` (one that shows nothing off the main process or when quiet)."""
        if not (self.progress and self.world.is_main):
            return NO_BAR
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=stage, unit="step", dynamic_ncols=True, leave=True)

    def sample(self, ema: EMA | None, step: int) -> None:
        """A sample grid of the current (EMA) weights."""
        if not self.world.is_main or self.on_sample is None:
            return
        with self.clock.paused(), torch.no_grad(), ema.applied() if ema is not None else contextlib.nullcontext():
            self._track_images(step, self.on_sample(f"step-{step:06d}", step))

    def evaluate(self, ema: EMA | None, step: int, *, seconds: float | None = None) -> None:
        """The run's evaluator on the current (EMA) weights, logged with the training
        seconds so far; evaluation time is not training time."""
        if self.on_evaluate is None:
            return
        if self.world.is_main:
            seconds = self.clock.seconds() if seconds is None else seconds
            applied = ema.applied() if ema is not None else contextlib.nullcontext()
            with self.clock.paused(), torch.no_grad(), applied:
                modules = [m for _, m in self.components.modules()]
                modes = [m.training for m in modules]
                for m in modules:
                    m.eval()
                try:
                    result = self.on_evaluate()
                finally:
                    for m, mode in zip(modules, modes):
                        m.train(mode)
            numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.log({"stage": "denoiser", "step": step, "kind": "eval", "train_seconds": seconds, "eval": numbers})
        self.world.barrier()

    def trained(self, steps: int, seconds: float | None) -> None:
        """After the denoiser stage, on its final (EMA) weights: the last evaluation,
        with the training seconds as committed, and the final sample grid."""
        train = self.components.settings.train
        if train.eval_every and steps:
            self.evaluate(None, steps, seconds=seconds)
        if self.on_sample is not None and self.world.is_main:
            with self.clock.paused():
                self._track_images(steps, self.on_sample("final", steps))

    def _track_images(self, step: int, images: Mapping[str, Path] | None) -> None:
        """The pictures a sample wrote (``name -> PNG``), to the trackers."""
        if images:
            self.tracking.images("denoiser", step, images)

    def data_report(self) -> None:
        """Datasets that skip unreadable files report them once training ends."""
        report = getattr(self.components.dataset, "report", None)
        if not callable(report) or not self.world.is_main:
            return
        data = report()
        atomic_write_json(self.run.path / "data_report.json", data)
        if isinstance(data, dict) and data.get("skipped"):
            summary = getattr(self.components.dataset, "summary", None)
            print(summary() if callable(summary) else f"data: {data['skipped']} unreadable file(s) skipped", flush=True)


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


#: The progress bar that shows nothing.
NO_BAR: ProgressBar = _NoBar()
