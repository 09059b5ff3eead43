"""The trainer: the stages a run needs, in order, each committed when it ends.

``modiff train`` runs the stages a run needs (:mod:`modiff.training_plan`), in order:

1. ``encoder`` — an autoencoder that still needs training (``Trainable``).
2. ``text_embedder`` — fitted on the caption corpus (``Fittable``), trained
   on image–caption pairs (``Trainable``), or both, in that order.
3. ``denoiser`` — the denoiser and conditioner (and a text embedder that
   asks for ``joint_training``, :class:`~modiff.protocols.TrainsJointly`) on
   the task's loss, the others frozen.

Each job is a module of its own, so this one reads in one sitting: what a
stage trains (:mod:`.stages`), its loop (:mod:`.runner`), checkpoints
(:mod:`.commits`), resuming (:mod:`.resume`), metrics, samples and
evaluations (:mod:`.reporting`), stopping early (:mod:`.stopping`) and the
training clock (:mod:`.clock`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..assembly import Components
from ..checkpoint import Checkpoint
from ..distributed import World
from ..errors import ModiffError, RunError
from ..protocols import Fittable, Trainable
from ..runs import RunDir
from ..tracking import Tracking
from ..training_plan import roles_of, stages_to_train
from .clock import TrainingClock
from .commits import RunProgress
from .reporting import TrainingReporter
from .resume import restore_finished
from .runner import StageRun
from .stages import Stage, component_stage, denoiser_stage, finish_component


class Trainer:
    """Runs the stages of a run, committing checkpoints into its run directory.

    ``resume_from`` is the run's committed checkpoint when resuming: finished
    stages are restored from it, the stage in progress continues from its
    trainer state, and stages not started begin from their initial weights.
    ``on_stage_done`` is called on the main process with each finished stage
    and the checkpoint that ends it. ``tracking`` receives what the run
    reports (:mod:`modiff.tracking`), and its trackers' run ids go into every
    checkpoint.
    """

    def __init__(
        self,
        components: Components,
        run: RunDir,
        *,
        world: World | None = None,
        progress: bool = True,
        resume_from: Checkpoint | None = None,
        on_sample: Callable[[str, int], Mapping[str, Path] | None] | None = None,
        on_evaluate: Callable[[], dict[str, Any]] | None = None,
        on_stage_done: Callable[[str, Checkpoint], None] | None = None,
        tracking: Tracking | None = None,
    ):
        if resume_from is not None and resume_from.legacy:
            raise RunError(
                f"{run.path} was written by an older modiff (components/ at the run's root); it can generate but "
                "not resume. Train it again with --overwrite."
            )
        self.components, self.run, self.settings = components, run, components.settings
        self.world = world or World.single()
        self.plan = stages_to_train(components)
        self.clock = TrainingClock(resume_from.train_seconds if resume_from is not None else 0.0)
        self.tracking = tracking or Tracking()
        self.run_progress = RunProgress(
            components, run, self.world, self.clock, resume_from, on_stage_done, tracking=self.tracking
        )
        self.reporter = TrainingReporter(
            components, run, self.world, self.clock, progress=progress, on_sample=on_sample, on_evaluate=on_evaluate,
            tracking=self.tracking,
        )

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The run's committed checkpoint (``None`` before the first)."""
        return self.run_progress.checkpoint

    @property
    def stages_done(self) -> list[str]:
        return self.run_progress.stages_done

    def roles_of(self, stage: str) -> list[str]:
        """The roles whose weights ``stage`` trains (and its checkpoints hold)."""
        return roles_of(self.components, stage)

    def train(self) -> None:
        with self.clock.counting():
            c = self.components
            if c.dataset is None:
                raise ModiffError("training needs a dataset: configure [data]")
            c.task.check(c)
            if self.checkpoint is not None:
                restore_finished(c, self.checkpoint, self.stages_done)
            for stage in self.plan:
                if stage not in self.stages_done:
                    self._train(stage)
            self.reporter.data_report()

    def _train(self, stage: str) -> None:
        """One stage, from where the run is to its commit."""
        if stage == "denoiser":
            self.run_stage(self.denoiser_stage())
            self.run_progress.stage_finished(stage)
            checkpoint = self.checkpoint
            self.reporter.trained(self.settings.train.steps, checkpoint.train_seconds if checkpoint else None)
            return
        component, settings = self.components.get(stage), getattr(self.settings.train, stage)
        if isinstance(component, Fittable):
            self.reporter.message(stage, "fitting on the caption corpus")
            component.fit(self.components.dataset.captions())  # type: ignore[union-attr]
        if isinstance(component, Trainable):  # after fitting, if both (a vocabulary, then a pretext task)
            self.run_stage(component_stage(stage, component, settings, self.world))
            finish_component(self.components, stage, component, settings.batch_size)
        self.run_progress.stage_finished(stage)

    def denoiser_stage(self) -> Stage:
        """The denoiser stage of this run (its loss built on the components as they are now)."""
        return denoiser_stage(self.components, self.world)

    def run_stage(self, stage: Stage) -> None:
        """Take ``stage``'s steps (from its checkpoint, when the run resumes in it)."""
        StageRun(stage, self.components, self.run_progress, self.reporter).run()
