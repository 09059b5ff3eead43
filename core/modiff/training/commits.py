"""A run's progress in training, and the one routine that commits it.

A checkpoint holds every component a finished stage trained (carried over
from the previous checkpoint by hard links unless written anew) and, in the
middle of a stage, that stage's inference weights (EMA) with the raw weights
and optimizer state a resume needs. The end of a stage and a checkpoint
within it differ only in what is written, so both go through one routine:
what a checkpoint holds is decided in one place (:meth:`RunProgress._commit`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..assembly import Components
from ..checkpoint import Checkpoint, CheckpointWriter, component_metadata
from ..distributed import World
from ..protocols import Fittable, Trainable
from ..runs import RunDir
from ..tracking import STATE_KEY, Tracking
from ..training_plan import roles_of, trained_roles
from .clock import TrainingClock
from .optim import EMA, optimizer_state_to_tensors
from .stages import Stage

#: Role -> (the module, the tensors to save as its weights).
Written = Mapping[str, tuple[nn.Module, Mapping[str, torch.Tensor]]]
#: The trainer state of the stage in progress: tensors and scalars.
TrainerState = tuple[dict[str, torch.Tensor], dict[str, Any]]


class RunProgress:
    """The run's committed checkpoint and finished stages, moved forward one commit at a time.

    Only the main process writes; every process waits at the barrier after a commit.
    """

    def __init__(
        self,
        components: Components,
        run: RunDir,
        world: World,
        clock: TrainingClock,
        resume_from: Checkpoint | None = None,
        on_stage_done: Callable[[str, Checkpoint], None] | None = None,
        *,
        tracking: Tracking | None = None,
    ):
        self.components = components
        self.run = run
        self.world = world
        self.clock = clock
        self.checkpoint = resume_from
        self.stages_done: list[str] = resume_from.stages_done if resume_from is not None else []
        #: Called on the main process with each finished stage and the checkpoint that ends it.
        self.on_stage_done = on_stage_done
        #: Whose run ids each checkpoint keeps, so that a resumed run continues its tracked runs.
        self.tracking = tracking or Tracking()

    def mid_stage(
        self, stage: Stage, step: int, opt: torch.optim.Optimizer, ema: EMA | None, scaler: torch.amp.GradScaler
    ) -> None:
        """A checkpoint within ``stage`` after ``step`` steps: EMA weights for inference,
        raw weights and optimizer state for resume."""
        if self.world.is_main:
            written = {
                role: (module, ema.shadow[role] if ema is not None else module.state_dict())
                for role, module in stage.modules.items()
            }
            self._commit(written, stage.name, step, _trainer_state(stage, step, opt, scaler))
        self.world.barrier()

    def stage_finished(self, stage: str) -> None:
        """``stage`` is finished: its components (final weights) join the run."""
        for role in roles_of(self.components, stage):
            module = self.components.get(role)
            if isinstance(module, (Trainable, Fittable)):
                module.needs_training = False
        self.stages_done = [*self.stages_done, stage]
        if self.world.is_main:
            modules = {role: self.components.get(role) for role in roles_of(self.components, stage)}
            written = {role: (m, m.state_dict()) for role, m in modules.items() if isinstance(m, nn.Module)}
            self._commit(written, None, 0)
            if self.on_stage_done is not None:
                self.on_stage_done(stage, self.checkpoint)
        self.world.barrier()

    def _commit(self, written: Written, stage: str | None, step: int, trainer: TrainerState | None = None) -> None:
        """One checkpoint: the finished stages' components (carried over unless in
        ``written``), ``written``, the trainer state of the stage in progress if any."""
        with CheckpointWriter(self.run.path, self.checkpoint) as writer:
            for role in trained_roles(self.components, self.stages_done):
                if role not in written and isinstance(self.components.get(role), nn.Module):
                    writer.carry(role)
            for role, (module, tensors) in written.items():
                resolved = self.components.settings.components[role]
                metadata = component_metadata(role, resolved.registration, resolved.params)
                writer.save_component(role, tensors, metadata, module)
            if trainer is not None:
                writer.save_trainer(*trainer)
            state = {"stages_done": self.stages_done, "stage": stage, "step": step,
                     "train_seconds": self.clock.seconds()}
            tracked = self.tracking.ids()
            if tracked:  # committed with the training state they go with
                state[STATE_KEY] = tracked
            self.checkpoint = writer.commit(state)


def _trainer_state(
    stage: Stage, step: int, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> TrainerState:
    """What resuming ``stage`` at ``step`` needs beyond its EMA weights: the raw weights,
    the optimizer's state, and the gradient scaler's when mixed precision uses one."""
    tensors, scalars = optimizer_state_to_tensors(opt)
    for role, module in stage.modules.items():
        for k, v in module.state_dict().items():
            tensors[f"model.{role}.{k}"] = v
    extra = {"grad_scaler": scaler.state_dict()} if scaler.is_enabled() else {}
    return tensors, {"stage": stage.name, "step": step, **scalars, **extra}
