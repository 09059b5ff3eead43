"""The losses of the training stages.

The denoiser stage's loss is :class:`DenoiserLoss` (the task decides the
image context, or replaces the loss altogether: see :mod:`modiff.tasks`);
the other stages use the component's own ``training_loss``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..assembly import Components
from ..distributed import World
from ..noise import randn, to_device
from ..protocols import Batch, Conditioning, TextEmbedding
from ..training_step import TrainingStep

StepLoss = Callable[[Batch, Sequence[int], torch.Generator], torch.Tensor]
ImageContext = Callable[[Components, Batch, torch.Generator, slice], "torch.Tensor | None"]
#: ``latents(images, dataset_indices, step)``: the batch's latents (cached, or encoded with the
#: step's per-sample generators).
Latents = Callable[[torch.Tensor, Sequence[int], TrainingStep], torch.Tensor]
#: ``text(captions, dataset_indices)``: the batch's text embedding (cached or embedded).
Text = Callable[[Sequence[str], Sequence[int]], TextEmbedding]


@dataclass
class DenoiserLoss:
    """The denoising objective: predict the scheduler's target from ``x_t``.

    Random draws (condition dropout, timesteps, noise, then the task's image
    context) are made for the whole global batch from the step's generator,
    and each rank keeps its share, so a run gives the same updates on one
    process or several.
    """

    components: Components
    latents: Latents
    text: Text | None
    condition_dropout: float
    world: World = field(default_factory=World.single)
    image_context: ImageContext | None = None

    def __call__(self, batch: Batch, indices: Sequence[int], g: torch.Generator) -> torch.Tensor:
        components, world = self.components, self.world
        scheduler, device = components.scheduler, components.device
        x0 = self.latents(batch.images, indices, TrainingStep(g, world.rank, world.size))
        b = x0.shape[0]
        share = slice(world.rank, None, world.size)
        drop = torch.rand(b * world.size, generator=g)[share] < self.condition_dropout
        t = to_device(scheduler.sample_timesteps(b * world.size, generator=g)[share], device)
        noise = to_device(randn((b * world.size, *x0.shape[1:]), g, dtype=x0.dtype)[share], device)
        context = self.image_context(components, batch, g, share) if self.image_context is not None else None
        cond = self.conditioning(batch, indices, to_device(drop, device), context)
        x_t = scheduler.add_noise(x0, noise, t)
        pred = components.denoiser(x_t, t.float(), cond)
        target = scheduler.training_target(x0, noise, t)
        per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
        return (scheduler.loss_weight(t).to(per_sample) * per_sample).mean()

    def conditioning(
        self, batch: Batch, indices: Sequence[int], drop: torch.Tensor, image_context: torch.Tensor | None
    ) -> Conditioning:
        conditioner = self.components.conditioner
        if conditioner is None:
            return Conditioning()
        b = len(batch)
        text = self.text(batch.captions, indices) if self.text is not None else None
        cond = conditioner.condition(text, image_context=image_context, batch_size=b)
        if self.condition_dropout > 0 and text is not None:
            cond = cond.where(drop, conditioner.null(b, like=text, image_context=image_context))
        return cond


def component_loss(component: Any, world: World) -> StepLoss:
    """A stage loss from a component's own ``training_loss(batch, step)``.

    A component whose ``training_loss`` takes only the batch still trains;
    on N processes its random draws then differ from one process's.
    """
    import inspect

    takes_step = len(inspect.signature(component.training_loss).parameters) >= 2

    def loss(batch: Batch, indices: Sequence[int], g: torch.Generator) -> torch.Tensor:
        if not takes_step:
            return component.training_loss(batch)
        return component.training_loss(batch, TrainingStep(g, world.rank, world.size))

    return loss
