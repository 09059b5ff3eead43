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
    out: list[float | None] = []
    for k in range(num_classes):
        p, t = predicted == k, truth == k
        union = int((p | t).sum())
        out.append(None if union == 0 else int((p & t).sum()) / union)
    return out


class IoUEvaluator:
    """Segments held-out images with :func:`modiff.tasks.segment` and scores the maps."""

    def __init__(self, num_images: int, seed_offset: int, batch_size: int):
        self.num_images = num_images
        self.seed_offset = seed_offset
        self.batch_size = batch_size

    def held_out(self, dataset: Any) -> Any:
        settings = getattr(dataset, "settings", None)
        if settings is not None and hasattr(settings, "seed") and type(dataset).__name__ == "ShapesDataset":
            return type(dataset)(settings.model_copy(update={"seed": settings.seed + self.seed_offset}))
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
        per_class = iou_per_class(pred, true, int(data.num_classes))
        scored = [v for v in per_class if v is not None]
        result: dict[str, Any] = {
            "mean_iou": sum(scored) / len(scored) if scored else 0.0,
            "pixel_accuracy": float((pred == true).float().mean()),
            "num_images": n,
        }
        for k, v in enumerate(per_class):
            if v is not None:
                result[f"iou_class_{k}"] = v
        return result
