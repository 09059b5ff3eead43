"""The iou evaluator: exact scores for perfect and wrong segmenters."""

from __future__ import annotations

import pytest
import torch

from modiff.assembly import BuildContext
from modiff.testing import build_one
from modiff_datasets.evaluation.iou import iou_per_class


def test_iou_per_class_against_hand_counts() -> None:
    truth = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1]]])
    assert iou_per_class(pred, truth, 3) == [0.5, 2 / 3, None]


class FakePipeline:
    def __init__(self, dataset):
        self.components = type("C", (), {"dataset": dataset})()


def fake_segment(mode: str):
    def segment(pipeline, images: torch.Tensor) -> torch.Tensor:
        # the shapes world is black background: any bright pixel is an object
        objects = images.max(1).values > -0.5
        if mode == "background":
            return torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.int64)
        return objects.long() * 2  # everything is a "square"

    return segment


def test_iou_evaluator_scores_segmenters(monkeypatch) -> None:
    from modiff_datasets.evaluation import iou

    dataset = build_one("data", "shapes", {"size": 50})
    ev = build_one("evaluator", "iou", {"num_images": 40, "batch_size": 16}, context=BuildContext(dataset=dataset))
    monkeypatch.setattr(iou, "segment", fake_segment("background"))
    bg = ev.evaluate(FakePipeline(dataset))
    assert bg["iou_class_0"] > 0.8 and bg["mean_iou"] < 0.4 and bg["num_images"] == 40
    monkeypatch.setattr(iou, "segment", fake_segment("squares"))
    sq = ev.evaluate(FakePipeline(dataset))
    assert sq["iou_class_0"] == 1.0, "background is found exactly from brightness"
    assert 0 < sq["iou_class_2"] < 1
    assert sq.get("iou_class_1", 0.0) == 0.0, "no pixel is predicted circle"


def test_per_image_counts_reproduce_the_numbers_and_a_small_training_set_is_scored_on_num_images(monkeypatch) -> None:
    from modiff import stats
    from modiff_datasets.evaluation import iou

    dataset = build_one("data", "shapes", {"size": 16, "max_objects": 2})
    ev = build_one("evaluator", "iou", {"num_images": 40, "batch_size": 16}, context=BuildContext(dataset=dataset))
    monkeypatch.setattr(iou, "segment", fake_segment("squares"))
    result = ev.evaluate(FakePipeline(dataset))
    assert result["num_images"] == 40, "16 labelled masks for training, still 40 held-out images"
    per_item = result["per_item"]
    assert len(per_item["ids"]) == 40 and len(set(per_item["ids"])) == 40
    assert {"mean_iou", "pixel_accuracy", "iou_class_0", "iou_class_1"} <= set(per_item["metrics"])
    for key in per_item["metrics"]:
        items = stats.seed_items(0, per_item["ids"], per_item["metrics"][key])
        assert stats.point([items]) == pytest.approx(result[key]), key
    assert result["iou_class_1"] == 0.0, "circles are present, never predicted"
