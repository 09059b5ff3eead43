"""What each stage trains, on what loss and for how long.

A component with a stage of its own (an autoencoder, a text embedder's
pretext) trains on its own ``training_loss``; the denoiser stage trains the
denoiser, a conditioner with weights and a jointly trained text embedder on
the task's loss, with every other component frozen and its outputs cached
where they cannot change (:mod:`.caches`). Building a stage is kept apart from
running it (:mod:`.runner`) so that the loop knows no stage by its contents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..assembly import Components
from ..distributed import World
from ..protocols import Batch, samples_posterior, trains_jointly
from ..settings import StageSettings
from ..training_plan import roles_of
from ..training_step import TrainingStep
from .caches import FrozenCache
from .losses import Latents, StepLoss, Text, component_loss
from .order import collate, step_seed


@dataclass
class Stage:
    """One optimisation stage: what is trained, on what loss, for how long."""

    name: str
    modules: dict[str, nn.Module]
    loss: StepLoss
    settings: StageSettings
    ema_decay: float = 0.0
    ema_warmup: bool = False


def component_stage(name: str, component: Any, settings: StageSettings, world: World) -> Stage:
    """The stage of a ``Trainable`` component (``encoder`` or ``text_embedder``) on its own loss."""
    return Stage(name, {name: component}, component_loss(component, world), settings)


def denoiser_stage(components: Components, world: World) -> Stage:
    """The denoiser stage: the task's loss, the encoder (and a text embedder not trained
    jointly) frozen, and what the frozen components compute cached."""
    c, train = components, components.settings.train
    joint = trains_jointly(c.text_embedder)
    for role in ("encoder",) + (() if joint else ("text_embedder",)):
        m = c.get(role)
        if isinstance(m, nn.Module):
            m.eval().requires_grad_(False)
    # The encoder is frozen in this stage (whether or not a stage of its own trained it), so its latents
    # can be cached unless it samples its posterior.
    deterministic = not samples_posterior(c.encoder)
    cache = FrozenCache(
        c.dataset,
        encoder=c.encoder if deterministic else None,
        embedder=c.text_embedder if c.text_embedder is not None and not joint else None,
    )

    def encoded(images: torch.Tensor, indices: Sequence[int], step: TrainingStep) -> torch.Tensor:
        # the posterior sample's noise from the step, per sample, as one process would draw it
        with torch.no_grad():
            return c.encoder.encode(images, generator=step.generators(len(images)))

    latents: Latents = cache.latents if deterministic else encoded
    text: Text | None = None
    if c.text_embedder is not None:
        text = (lambda captions, indices: c.text_embedder.embed(captions)) if joint else cache.text
    loss = c.task.training_loss(c, latents=latents, text=text, condition_dropout=train.condition_dropout, world=world)
    modules = {role: c.get(role) for role in roles_of(c, "denoiser")}
    return Stage("denoiser", modules, loss, train, ema_decay=train.ema_decay, ema_warmup=train.ema_warmup)


def finish_component(components: Components, stage: str, component: Any, batch_size: int) -> None:
    """The component's ``finish_training`` (a latent scale to estimate), seeded
    alike on every process so that all of them keep the same component."""
    seed = components.settings.run.seed
    torch.manual_seed(step_seed(seed, f"{stage}/finish", 0))
    component.finish_training(_sample_batches(components, batch_size))


def _sample_batches(components: Components, batch_size: int, count: int = 8) -> list[Batch]:
    ds = components.dataset
    g = torch.Generator().manual_seed(step_seed(components.settings.run.seed, "finish", 0))
    n = min(len(ds), batch_size * count)
    idx = torch.randperm(len(ds), generator=g)[:n].tolist()
    return [collate(ds, idx[i : i + batch_size]).to(components.device) for i in range(0, n, batch_size)]
