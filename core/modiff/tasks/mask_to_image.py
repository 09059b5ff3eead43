"""Mask-to-image: the layout comes from a segmentation map (semantic synthesis).

The map, one channel per class resized to the latent size, is concatenated
to the denoiser's input; a prompt may add colour or be left empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..errors import ModiffError
from ..grids import colour_masks, dataset_examples, save_labelled
from ..images import to_pil
from .base import Task
from .generation import Generated, GenerationRequest, Input

if TYPE_CHECKING:
    from ..assembly import BuildContext, Components
    from ..pipeline import Pipeline
    from ..protocols import Batch


def mask_context(masks: torch.Tensor, num_classes: int, size: int) -> torch.Tensor:
    """Class maps ``[B, H, W]`` to one-hot ``[B, K, size, size]`` (area-averaged,
    so a class covering part of a latent cell gives a fraction)."""
    onehot = F.one_hot(masks.long().clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float()
    if onehot.shape[-1] != size:
        onehot = F.adaptive_avg_pool2d(onehot, size)
    return onehot


class MaskToImage(Task):
    """Images whose layout follows a class map; the map is the image context."""

    name = "mask-to-image"
    description = "images whose layout follows a segmentation map"
    needs_masks = True
    usage = 'generate images with `modiff generate {run} "a prompt" --mask MAP.png`'
    inputs = (Input("mask", "mask", "segmentation map PNG: one grey level per class index", required=True),)

    def generate(self, pipeline: Pipeline, request: GenerationRequest) -> Generated:
        sampling = self._sampling(request)
        masks = request.inputs["mask"][None].expand(len(request.prompts), -1, -1)
        images = mask_to_image(pipeline, list(request.prompts), masks, seed=request.seeds[0], **sampling.options())
        return Generated({"images": images}, sampling)

    def image_context_channels(self, context: BuildContext) -> int:
        return context.num_classes

    def training_image_context(
        self, components: Components, batch: Batch, generator: torch.Generator, share: slice
    ) -> torch.Tensor:
        if batch.masks is None:
            raise ModiffError("task 'mask-to-image' needs a dataset with masks")
        ctx = components.context
        return mask_context(batch.masks, ctx.num_classes, ctx.latent_size).to(batch.images)

    def write_samples(self, pipeline: Pipeline, prompts: Sequence[str], path: Path, **kwargs: Any) -> Path:
        """Dataset maps beside the images made from them."""
        examples = dataset_examples(pipeline, self.name)
        captions = [e.caption for e in examples]
        masks = torch.stack([e.mask for e in examples])  # type: ignore[misc]
        made = mask_to_image(pipeline, captions, masks, **kwargs)
        cells = [img for pair in zip(to_pil(colour_masks(masks)), to_pil(made)) for img in pair]
        labels = [label for c in captions for label in ("map", c)]
        return save_labelled(cells, labels, path, cols=4)


def mask_to_image(pipeline: Pipeline, prompts: Sequence[str], masks: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` whose layout follows class maps ``masks [B, H, W]``
    (a ``mask-to-image`` run); prompts may be empty strings. ``kwargs`` go to
    :meth:`Pipeline.generate_latents` (seed, steps, guidance)."""
    if not isinstance(pipeline.task, MaskToImage):
        raise ModiffError(
            f"this run's task is {pipeline.task.name!r}; --mask needs a run trained with task = \"mask-to-image\""
        )
    ctx = pipeline.components.context
    context = mask_context(masks, ctx.num_classes, ctx.latent_size).to(pipeline.device)
    return pipeline.decode(pipeline.generate_latents(list(prompts), image_context=context, **kwargs))
