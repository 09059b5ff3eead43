"""Segmentation: the UNet's original job, with the same components.

The encoded image goes in (no noise, ``t = 0``), per-pixel class logits come
out (``DenoiserSpec.head = "segment"``); the loss is cross-entropy plus soft
Dice. No noise schedule is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..devices import autocast
from ..errors import ModiffError
from ..grids import colour_masks
from ..protocols import Conditioning
from ..training_step import TrainingStep
from .base import StepLoss, Task
from .generation import Generated, GenerationRequest, Input, Output

if TYPE_CHECKING:
    from ..assembly import Components
    from ..distributed import World
    from ..pipeline import Pipeline
    from ..protocols import Batch, TextEmbedding


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cross-entropy plus soft Dice, logits upsampled to the masks' size."""
    if logits.shape[-2:] != masks.shape[-2:]:
        logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    ce = F.cross_entropy(logits.float(), masks.long())
    probs = logits.float().softmax(1)
    onehot = F.one_hot(masks.long(), num_classes).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum((0, 2, 3))
    union = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = 1 - ((2 * inter + 1) / (union + 1)).mean()
    return ce + dice


class SegmentationLoss:
    """Train a segmentation head: encoded image in, class logits out; no noise, t = 0."""

    def __init__(self, components: Components, latents: Callable[..., torch.Tensor], world: World | None = None):
        self.components = components
        self.latents = latents
        self.world = world

    def __call__(self, batch: Batch, indices: Sequence[int], g: torch.Generator) -> torch.Tensor:
        components = self.components
        if batch.masks is None:
            raise ModiffError("task 'segmentation' needs a dataset with masks")
        rank, size = (self.world.rank, self.world.size) if self.world is not None else (0, 1)
        x = self.latents(batch.images, indices, TrainingStep(g, rank, size))
        t = torch.zeros(x.shape[0], device=x.device)
        logits = components.denoiser(x, t, _no_text(components, x.shape[0]))
        return segmentation_loss(logits, batch.masks, max(2, components.context.num_classes))


def _no_text(components: Components, batch_size: int) -> Conditioning:
    conditioner = components.conditioner
    return conditioner.condition(None, batch_size=batch_size) if conditioner is not None else Conditioning()


class Segmentation(Task):
    """Class maps from images, trained on the dataset's masks."""

    name = "segmentation"
    description = "class maps from images (the UNet's original job)"
    head = "segment"
    uses_scheduler = False
    needs_masks = True
    usage = "segment an image with `modiff generate {run} --image IMAGE.png` (or `modiff segment {run} IMAGE...`)"
    takes_prompts = False
    inputs = (Input("image", "image", "the image to segment", required=True),)
    outputs = (
        Output("images", "-segmented", "the image with its class map over it"),
        Output("masks", "-mask", "the class map: one grey level per class index"),
    )

    def generate(self, pipeline: Pipeline, request: GenerationRequest) -> Generated:
        images = request.inputs["image"][None].expand(len(request.prompts), -1, -1, -1)
        masks = segment(pipeline, images)
        overlay = (0.5 * images + 0.5 * colour_masks(masks)).clamp(-1, 1)
        return Generated({"images": overlay, "masks": masks})

    def training_loss(
        self,
        components: Components,
        *,
        latents: Callable[..., torch.Tensor],
        text: Callable[[Sequence[str], Sequence[int]], TextEmbedding] | None,
        condition_dropout: float,
        world: World,
    ) -> StepLoss:
        return SegmentationLoss(components, latents, world)

    def write_samples(self, pipeline: Pipeline, prompts: Sequence[str], path: Path, **kwargs: Any) -> None:
        return None


@torch.inference_mode()
def segment(pipeline: Pipeline, images: torch.Tensor) -> torch.Tensor:
    """Class maps ``[B, H, W]`` for images ``[B, 3, H, W]`` (a ``segmentation`` run)."""
    if not isinstance(pipeline.task, Segmentation):
        raise ModiffError(
            f"this run's task is {pipeline.task.name!r}; segmentation needs a run trained with task = \"segmentation\""
        )
    components, device = pipeline.components, pipeline.device
    images = images.to(device)
    with autocast(device, components.settings.run.precision):
        x = components.encoder.encode(images)
        logits = components.denoiser(x, torch.zeros(len(images), device=device), _no_text(components, len(images)))
    logits = logits.float()
    if logits.shape[-2:] != images.shape[-2:]:
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return logits.argmax(1).cpu()
