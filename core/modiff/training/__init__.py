"""Training: the loop the core owns, split by job.

* :mod:`.order` — the data order and the per-step seeds (pure functions of
  ``(seed, stage, step)``);
* :mod:`.losses` and :mod:`.caches` — the stages' losses and the caches of
  frozen components' outputs;
* :mod:`.optim` — learning-rate schedule, EMA, optimizer state as tensors;
* :mod:`.stages` — what each stage trains, on what loss (:class:`Stage`);
* :mod:`.runner` — one stage's loop; :mod:`.stopping` — Ctrl-C and
  non-finite losses; :mod:`.clock` — the training seconds;
* :mod:`.commits` — the one routine that commits checkpoints through
  :mod:`modiff.checkpoint`; :mod:`.resume` — continuing from one;
* :mod:`.reporting` — metrics, samples, evaluations, progress;
* :mod:`.loop` — the :class:`Trainer`: the stages in order.
"""

from ..training_step import TrainingStep
from .caches import FrozenCache
from .loop import Trainer
from .losses import DenoiserLoss, component_loss
from .optim import EMA, lr_at
from .order import batch_indices, collate, step_seed
from .stages import Stage
from .stopping import NonFiniteLoss, TrainingInterrupted

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
