"""What ``[run] task`` changes: the image context a denoiser sees, and the loss.

* ``text-to-image`` — no image context; the denoising loss.
* ``mask-to-image`` — the segmentation map, one channel per class, resized to
  the latent size, is concatenated to the denoiser's input (semantic
  synthesis, conditioned on a map with or without a prompt).
* ``inpainting`` — the Stable Diffusion inpainting layout: the mask (1 where
  the image is to be painted) and the latent of the masked image are
  concatenated, so the input is ``[x_t, mask, masked-image latent]``.
* ``segmentation`` — the UNet's original job: the encoded image in,
  per-pixel class logits out (``head = "segment"``), cross-entropy plus Dice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .protocols import Batch, Conditioning

IMAGE_CONTEXT_TASKS = ("mask-to-image", "inpainting")


def image_context_channels(task: str, num_classes: int, latent_channels: int) -> int:
    """How many channels of image context ``task`` concatenates (0 for none)."""
    if task == "mask-to-image":
        return num_classes
    if task == "inpainting":
        return 1 + latent_channels
    return 0


def mask_context(masks: torch.Tensor, num_classes: int, size: int) -> torch.Tensor:
    """Class maps ``[B, H, W]`` to one-hot ``[B, K, size, size]`` (area-averaged,
    so a class covering part of a latent cell gives a fraction)."""
    onehot = F.one_hot(masks.long().clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float()
    if onehot.shape[-1] != size:
        onehot = F.adaptive_avg_pool2d(onehot, size)
    return onehot


def inpainting_context(encoder: Any, images: torch.Tensor, paint: torch.Tensor, size: int) -> torch.Tensor:
    """``[mask at latent size, latent of the image with the painted region blanked]``.

    ``paint`` is ``[B, 1, H, W]``, 1 where new content goes.
    """
    masked = images * (1 - paint)
    small = F.adaptive_max_pool2d(paint, size) if paint.shape[-1] != size else paint
    return torch.cat([small, encoder.encode(masked)], 1)


def random_paint_masks(batch: int, size: int, g: torch.Generator, *, min_frac: float = 0.25, max_frac: float = 0.75) -> torch.Tensor:
    """Random rectangles (``[B, 1, size, size]``, 1 inside), one per sample,
    drawn from ``g``; sometimes the whole image, so the model also learns
    plain generation (as SD's inpainting training does)."""
    masks = torch.zeros(batch, 1, size, size)
    for i in range(batch):
        if float(torch.rand((), generator=g)) < 0.1:
            masks[i] = 1
            continue
        h, w = (int(size * (min_frac + (max_frac - min_frac) * float(torch.rand((), generator=g)))) for _ in range(2))
        h, w = max(1, h), max(1, w)
        y = int(torch.randint(0, size - h + 1, (), generator=g))
        x = int(torch.randint(0, size - w + 1, (), generator=g))
        masks[i, :, y : y + h, x : x + w] = 1
    return masks


def training_image_context(
    task: str, components: Any, batch: Batch, g: torch.Generator, share: slice
) -> torch.Tensor | None:
    """The image context of a training batch for ``task`` (``None`` for none).

    Random choices are drawn for the global batch and sliced to this rank's
    ``share``, like every other training draw.
    """
    ctx = components.context
    size = ctx.latent_size
    if task == "mask-to-image":
        if batch.masks is None:
            raise ValueError("task 'mask-to-image' needs a dataset with masks")
        return mask_context(batch.masks, ctx.num_classes, size).to(batch.images)
    if task == "inpainting":
        world_batch = len(batch) * (share.step or 1)
        paint = random_paint_masks(world_batch, batch.images.shape[-1], g)[share].to(batch.images)
        with torch.no_grad():
            return inpainting_context(components.encoder, batch.images, paint, size)
    return None


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

    def __init__(self, components: Any, latents: Any):
        self.components = components
        self.latents = latents

    def __call__(self, batch: Batch, indices: Sequence[int], g: torch.Generator) -> torch.Tensor:
        c = self.components
        if batch.masks is None:
            raise ValueError("task 'segmentation' needs a dataset with masks")
        x = self.latents(batch.images, indices)
        t = torch.zeros(x.shape[0], device=x.device)
        cond = c.conditioner.condition(None, batch_size=x.shape[0]) if c.conditioner is not None else Conditioning()
        logits = c.denoiser(x, t, cond)
        return segmentation_loss(logits, batch.masks, max(2, c.context.num_classes))


def blend_known(
    scheduler: Any, known: torch.Tensor, keep: torch.Tensor, noise: torch.Tensor
) -> Any:
    """A model-function wrapper for training-free inpainting (RePaint-style
    replacement): before every prediction, the region to keep is replaced by
    the known latent noised to the current timestep, so the sampler only
    invents the painted region and stays consistent with its surroundings."""

    def wrap(fn: Any) -> Any:
        def inner(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            noised = scheduler.add_noise(known, noise, t)
            return fn(keep * noised + (1 - keep) * x, t)

        return inner

    return wrap
