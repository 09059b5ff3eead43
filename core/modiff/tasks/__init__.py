"""What a run learns to do with its components: a task.

A task is one object (a :class:`Task` subclass) that says everything that
differs between, say, text-to-image and segmentation: the image context the
denoiser sees beside ``x_t``, what the denoiser outputs, the training loss,
whether a noise schedule is needed, how a sample grid shows the task, and
what a generation takes and returns (its :class:`Input` fields and
:class:`Output` kinds, and its ``generate`` method), from which
``modiff generate`` derives its options and its files.
The trainer, the pipeline and the commands ask the run's task instead of
branching on its name, so a new task is one class (registered by a plugin's
``register_tasks`` hook, like every other component) with its tests.

Built in:

* ``text-to-image`` — no image context; the denoising loss (:mod:`.text_to_image`).
* ``mask-to-image`` — a class map as context (:mod:`.mask_to_image`).
* ``inpainting`` — mask and masked-image latent as context, Stable
  Diffusion's layout (:mod:`.inpainting`).
* ``segmentation`` — the UNet's original job: image in, class logits out
  (:mod:`.segmentation`).
"""

from __future__ import annotations

from ..parameters import Sampling
from .base import Task
from .generation import Generated, GenerationRequest, Input, Output, generate
from .inpainting import Inpainting, blend_known, inpaint, inpainting_context, random_paint_masks
from .mask_to_image import MaskToImage, mask_context, mask_to_image
from .segmentation import Segmentation, SegmentationLoss, segment, segmentation_loss
from .text_to_image import TextToImage

#: The tasks the core ships; plugins add theirs through ``register_tasks``.
BUILTIN_TASKS: tuple[Task, ...] = (TextToImage(), MaskToImage(), Inpainting(), Segmentation())

__all__ = [
    "BUILTIN_TASKS",
    "Generated",
    "GenerationRequest",
    "Input",
    "Output",
    "Sampling",
    "Inpainting",
    "MaskToImage",
    "Segmentation",
    "SegmentationLoss",
    "Task",
    "TextToImage",
    "blend_known",
    "generate",
    "inpaint",
    "inpainting_context",
    "mask_context",
    "mask_to_image",
    "random_paint_masks",
    "segment",
    "segmentation_loss",
]
