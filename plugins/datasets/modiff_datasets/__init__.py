"""Datasets for modiff: the procedural shapes world and image folders, with
the shapes world's prompt-accuracy evaluator.

Registered components:

* dataset ``shapes``: coloured circles, squares and triangles on black, with
  captions and masks, drawn on the fly from ``(seed, index)``.
* dataset ``image-folder``: a user's captioned images (and optional masks).
* evaluator ``prompt-accuracy``: generates images for known prompts and checks
  colour, shape, position and count without any learned model.

torch is imported inside the factories, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .config import ImageFolderSettings, IoUSettings, PromptAccuracySettings, ShapesSettings

__all__ = [
    "ImageFolderSettings",
    "PromptAccuracySettings",
    "ShapesSettings",
    "build_image_folder",
    "build_prompt_accuracy",
    "build_shapes",
]


def build_shapes(settings: ShapesSettings, context: modiff.BuildContext) -> Any:
    """Procedural shapes world: captions, masks, held-out colour-shape pairs."""
    from .shapes.dataset import ShapesDataset

    return ShapesDataset(settings)


def build_image_folder(settings: ImageFolderSettings, context: modiff.BuildContext) -> Any:
    """A folder of captioned images (metadata.jsonl or .txt), optional masks."""
    from .image_folder import ImageFolderDataset

    return ImageFolderDataset(settings)


def build_prompt_accuracy(settings: PromptAccuracySettings, context: modiff.BuildContext) -> Any:
    """Shapes-world prompt accuracy: colour, shape, position and count, checked exactly."""
    from .evaluation.prompt_accuracy import PromptAccuracy

    holdout = settings.holdout
    if holdout is None:  # follow the run's shapes dataset, if it has held-out pairs
        holdout = list(getattr(getattr(context, "dataset", None), "holdout", ()) or ())
    return PromptAccuracy(settings, holdout=holdout)


@modiff.hookimpl
def register_datasets(register: modiff.Register) -> None:
    register("shapes", build_shapes, ShapesSettings)
    register("image-folder", build_image_folder, ImageFolderSettings)


def build_iou(settings: IoUSettings, context: modiff.BuildContext) -> Any:
    """Segmentation: intersection over union per class and mean, on held-out images."""
    from .evaluation.iou import IoUEvaluator

    return IoUEvaluator(settings.num_images, settings.seed_offset, settings.batch_size)


@modiff.hookimpl
def register_evaluators(register: modiff.Register) -> None:
    register("prompt-accuracy", build_prompt_accuracy, PromptAccuracySettings)
    register("iou", build_iou, IoUSettings)
