"""Segmentation quality: intersection over union per class, and their mean.

Held-out images come from the run's own dataset: for the procedural shapes
world, a copy with another seed (images the model has never seen); for any
other dataset, its last ``num_images`` examples (hold them out of training
yourself by sizing the training set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

import modiff
from modiff.tasks import segment


def iou_per_class(predicted: torch.Tensor, truth: torch.Tensor, num_classes: int) -> list[float | None]:
    """IoU of every class over a batch of class maps; ``None`` for a class absent
    from both (it cannot be scored)."""
    inter, union = counts_per_image(predicted, truth, num_classes)
    return [None if int(u) == 0 else int(i) / int(u) for i, u in zip(inter.sum(0), union.sum(0))]


def counts_per_image(
    predicted: torch.Tensor, truth: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and class, the pixels of the intersection and of the union:
    two ``[B, num_classes]`` int64 tensors. Their sums over images give the IoU."""
    classes = torch.arange(num_classes, device=predicted.device).view(1, -1, 1, 1)
    p, t = predicted.unsqueeze(1) == classes, truth.unsqueeze(1) == classes
    return (p & t).flatten(2).sum(-1), (p | t).flatten(2).sum(-1)


class IoUEvaluator:
    """Segments held-out images with :func:`modiff.tasks.segment` and scores the maps.

    Besides the flat numbers, ``per_item`` holds each image's intersection and
    union per class (``mean_iou`` and ``iou_class_k`` are ratios of their
    sums) and its pixel accuracy: the form ``modiff.stats`` resamples for
    intervals over images and seeds.
    """

    def __init__(self, num_images: int, seed_offset: int, batch_size: int):
        self.num_images = num_images
        self.seed_offset = seed_offset
        self.batch_size = batch_size

    def held_out(self, dataset: Any) -> Any:
        """The shapes world with another seed and at least ``num_images`` examples
        (a training set of 16 labelled masks is still scored on ``num_images``);
        any other dataset as it is."""
        settings = getattr(dataset, "settings", None)
        if settings is not None and hasattr(settings, "seed") and type(dataset).__name__ == "ShapesDataset":
            update = {"seed": settings.seed + self.seed_offset, "size": max(settings.size, self.num_images)}
            return type(dataset)(settings.model_copy(update=update))
        return dataset

    def evaluate(self, pipeline: modiff.GeneratingPipeline, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        dataset = pipeline.components.dataset
        if dataset is None or not getattr(dataset, "num_classes", 0):
            raise ValueError("the iou evaluator needs a dataset with masks (num_classes > 0)")
        data = self.held_out(dataset)
        n = min(self.num_images, len(data))
        indices = range(len(data) - n, len(data)) if data is dataset else range(n)
        predicted, truth = [], []
        batch: list[Any] = []
        for i in indices:
            batch.append(data[i])
            if len(batch) == self.batch_size or i == indices[-1]:
                images = torch.stack([e.image for e in batch])
                predicted.append(segment(pipeline, images))
                truth.append(torch.stack([e.mask for e in batch]))
                batch = []
        pred, true = torch.cat(predicted), torch.cat(truth)
        num_classes = int(data.num_classes)
        inter, union = counts_per_image(pred, true, num_classes)
        per_class = [None if int(u) == 0 else int(i) / int(u) for i, u in zip(inter.sum(0), union.sum(0))]
        scored = [v for v in per_class if v is not None]
        result: dict[str, Any] = {
            "mean_iou": sum(scored) / len(scored) if scored else 0.0,
            "pixel_accuracy": float((pred == true).float().mean()),
            "num_images": n,
        }
        for k, v in enumerate(per_class):
            if v is not None:
                result[f"iou_class_{k}"] = v
        seed = getattr(getattr(data, "settings", None), "seed", "")
        metrics: dict[str, Any] = {
            "mean_iou": {"num": inter.tolist(), "den": union.tolist()},
            "pixel_accuracy": (pred == true).flatten(1).float().mean(1).tolist(),
        }
        for k, v in enumerate(per_class):
            if v is not None:
                metrics[f"iou_class_{k}"] = {"num": inter[:, k : k + 1].tolist(), "den": union[:, k : k + 1].tolist()}
        result["per_item"] = {"ids": [f"{seed}:{i}" for i in indices], "metrics": metrics}
        return result
