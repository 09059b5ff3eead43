"""Inpainting: repaint a region of an image, following a prompt.

Two ways, one per kind of run:

* ``trained`` — a run trained with ``task = "inpainting"``: Stable Diffusion's
  layout, the mask (1 where new content goes) and the latent of the masked
  image concatenated to ``x_t``.
* ``training-free`` — any text-to-image run: before every prediction the
  region to keep is replaced by the known latent noised to the current
  timestep (RePaint-style replacement), so the sampler invents only the
  painted region and stays consistent with its surroundings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ..errors import ModiffError
from ..grids import dataset_examples, save_labelled
from ..images import to_pil
from ..noise import generators, randn
from .base import Task
from .generation import Generated, GenerationRequest, Input

if TYPE_CHECKING:
    from ..assembly import BuildContext, Components
    from ..pipeline import Pipeline
    from ..protocols import Batch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METHODS = ("auto", "trained", "training-free")


def inpainting_context(encoder: Any, images: torch.Tensor, paint: torch.Tensor, size: int) -> torch.Tensor:
    """``[mask at latent size, latent of the image with the painted region blanked]``.

    ``paint`` is ``[B, 1, H, W]``, 1 where new content goes.
    """
    masked = images * (1 - paint)
    small = F.adaptive_max_pool2d(paint, size) if paint.shape[-1] != size else paint
    return torch.cat([small, encoder.encode(masked)], 1)


def random_paint_masks(
    batch: int, size: int, g: torch.Generator, *, min_frac: float = 0.25, max_frac: float = 0.75
) -> torch.Tensor:
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


def blend_known(
    scheduler: Any, known: torch.Tensor, keep: torch.Tensor, noise: torch.Tensor
) -> Callable[[ModelFn], ModelFn]:
    """A model-function wrapper for training-free inpainting: the region to keep
    is replaced by ``known`` noised to the current timestep before every prediction."""

    def wrap(fn: ModelFn) -> ModelFn:
        def inner(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            noised = scheduler.add_noise(known, noise, t)
            return fn(keep * noised + (1 - keep) * x, t)

        return inner

    return wrap


class Inpainting(Task):
    """Trained inpainting in Stable Diffusion's layout: ``[x_t, mask, masked latent]``."""

    name = "inpainting"
    description = "repaint a masked region of an image (Stable Diffusion's inpainting layout)"
    usage = 'repaint images with `modiff generate {run} "a prompt" --image IMAGE.png --mask REGION.png`'
    inputs = (
        Input("image", "image", "the image to repaint", required=True),
        Input("mask", "mask", "the region to repaint (non-zero pixels of a grey PNG)", required=True),
        Input("inpaint", "choice", "inpainting method", default="auto", choices=METHODS),
    )

    def generate(self, pipeline: Pipeline, request: GenerationRequest) -> Generated:
        return inpaint_request(pipeline, request)

    def image_context_channels(self, context: BuildContext) -> int:
        return 1 + context.latent_channels

    def training_image_context(
        self, components: Components, batch: Batch, generator: torch.Generator, share: slice
    ) -> torch.Tensor:
        world_batch = len(batch) * (share.step or 1)
        paint = random_paint_masks(world_batch, batch.images.shape[-1], generator)[share].to(batch.images)
        with torch.no_grad():
            return inpainting_context(components.encoder, batch.images, paint, components.context.latent_size)

    def write_samples(self, pipeline: Pipeline, prompts: Sequence[str], path: Path, **kwargs: Any) -> Path:
        """Dataset images, the region to repaint (the middle), and the result."""
        examples = dataset_examples(pipeline, self.name)
        captions = [e.caption for e in examples]
        images = torch.stack([e.image for e in examples])
        size = images.shape[-1]
        paint = torch.zeros(len(images), 1, size, size)
        paint[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
        made = inpaint(pipeline, captions, images, paint, **kwargs)
        shown = images * (1 - paint) + paint * 0.3
        cells = [img for trio in zip(to_pil(images), to_pil(shown), to_pil(made)) for img in trio]
        labels = [label for c in captions for label in ("original", "region", c)]
        return save_labelled(cells, labels, path, cols=6)


def inpaint_request(pipeline: Pipeline, request: GenerationRequest) -> Generated:
    """A generation's ``image`` repainted in its ``mask``'s non-zero region (by
    its ``inpaint`` method), one image per item."""
    sampling = request.sampling
    if sampling is None:
        raise ModiffError("inpainting samples, but the generation has no sampling parameters")
    count = len(request.prompts)
    image = request.inputs["image"][None].expand(count, -1, -1, -1)
    paint = (request.inputs["mask"] > 0).float()[None, None].expand(count, -1, -1, -1)
    images = inpaint(
        pipeline, list(request.prompts), image, paint, method=request.inputs.get("inpaint", "auto"),
        seed=request.seeds[0], **sampling.options(),
    )
    return Generated({"images": images}, sampling)


def inpaint(
    pipeline: Pipeline,
    prompts: Sequence[str],
    images: torch.Tensor,
    paint: torch.Tensor,
    *,
    method: str = "auto",
    **kwargs: Any,
) -> torch.Tensor:
    """Repaint the region ``paint`` (``[B, 1, H, W]`` or ``[B, H, W]``, 1 = new
    content) of ``images`` following ``prompts``; pixels outside it are
    returned unchanged.

    ``method`` is ``"trained"`` (a run trained with ``task = "inpainting"``),
    ``"training-free"`` (any text-to-image run) or ``"auto"`` (by the run's
    task). ``kwargs`` go to :meth:`Pipeline.generate_latents`.
    """
    if method not in METHODS:
        raise ModiffError(f"inpainting method {method!r} is unknown; use {', '.join(METHODS)}")
    components, device = pipeline.components, pipeline.device
    if paint.dim() == 3:
        paint = paint[:, None]
    images, paint = images.to(device).float(), paint.to(device).float()
    size = components.context.latent_size
    trained = isinstance(pipeline.task, Inpainting)
    if method == "auto":
        method = "trained" if trained else "training-free"
    if method == "trained":
        if not trained:
            raise ModiffError(
                f"this run's task is {pipeline.task.name!r}; trained inpainting needs task = \"inpainting\""
            )
        with torch.inference_mode():
            context = inpainting_context(components.encoder, images, paint, size)
        latents = pipeline.generate_latents(list(prompts), image_context=context, **kwargs)
    else:
        with torch.inference_mode():
            known = components.encoder.encode(images)
            keep = 1 - F.adaptive_max_pool2d(paint, size)
            seed = int(kwargs.get("seed", 0))
            noise = randn(known.shape, generators([seed + 10_000 + i for i in range(len(images))]), device=device)
        wrap = blend_known(pipeline.scheduler, known, keep, noise)
        latents = pipeline.generate_latents(list(prompts), wrap_model=wrap, **kwargs)
        latents = keep * known + (1 - keep) * latents
    painted = pipeline.decode(latents).to(device)
    return (paint * painted + (1 - paint) * images).cpu()
