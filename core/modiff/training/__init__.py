"""Training: the loop the core owns, split by job.

* :mod:`.order` — the data order and the per-step seeds (pure functions of
  ``(seed, stage, step)``);
* :mod:`.losses` and :mod:`.caches` — the stages' losses and the caches of
  frozen components' outputs;
* :mod:`.optim` — learning-rate schedule, EMA, optimizer state as tensors;
* :mod:`.loop` — the :class:`Trainer`, which commits checkpoints through
  :mod:`modiff.checkpoint`.
"""

from .caches import FrozenCache
from .loop import NonFiniteLoss, Stage, Trainer, TrainingInterrupted
from .losses import DenoiserLoss, component_loss
from .optim import EMA, lr_at
from .order import batch_indices, collate, step_seed
from .step import TrainingStep

__all__ = [
    "EMA",
    "DenoiserLoss",
    "FrozenCache",
    "NonFiniteLoss",
    "Stage",
    "Trainer",
    "TrainingStep",
    "TrainingInterrupted",
    "batch_indices",
    "collate",
    "component_loss",
    "lr_at",
    "step_seed",
]
