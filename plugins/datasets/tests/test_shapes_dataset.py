"""The shapes dataset as a modiff component."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import torch

import modiff
from modiff.testing import build_one
from modiff.testing.contracts import DatasetContract
from modiff_datasets.shapes import MASK_CLASSES, PALETTE, parse, render


class TestShapesContract(DatasetContract):
    plugin = "shapes"
    settings: ClassVar[dict[str, Any]] = {"size": 40, "max_objects": 2, "holdout": ["yellow triangle"]}


class TestShapes128Contract(DatasetContract):
    plugin = "shapes"
    settings: ClassVar[dict[str, Any]] = {"size": 5, "image_size": 128, "corpus_size": 3}
    corpus_has_every_caption = False  # corpus_size = 3 of the 5 captions


def test_examples_are_the_rendered_scenes() -> None:
    d = build_one("data", "shapes", {"size": 30, "image_size": 64, "max_objects": 2})
    assert d.num_classes == 4 and len(d) == 30 and d.image_size == 64
    for i in range(30):
        ex, scene = d[i], d.scene(i)
        rgb, mask = render(scene.objects, 64)
        expected = torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.allclose(ex.image, expected, atol=1e-6) and ex.image.dtype == torch.float32
        assert float(ex.image.min()) == -1.0, "black background is -1"
        assert torch.equal(ex.mask, torch.from_numpy(mask))
        assert ex.caption == scene.caption
        assert [(o.colour, o.shape, o.cell) for o in parse(ex.caption)] == [
            (o.colour, o.shape, o.cell) for o in scene.objects
        ]
        for o in scene.objects:  # exact colours survive the conversion
            pix = ((ex.image + 1) * 127.5).round().to(torch.int64).permute(1, 2, 0).numpy()
            hit = np.all(pix == PALETTE[o.colour], axis=2) & (ex.mask.numpy() == MASK_CLASSES[o.shape])
            assert hit.any()
    assert torch.equal(d[-1].image, d[29].image)
    with pytest.raises(IndexError):
        d[30]


def test_caption_corpus() -> None:
    d = build_one("data", "shapes", {"size": 50, "max_objects": 2})
    assert list(d.captions()) == [d[i].caption for i in range(50)]
    d = build_one("data", "shapes", {"size": 50, "corpus_size": 10})
    assert len(list(d.captions())) == 10


def test_settings_errors() -> None:
    reg = modiff.registry().lookup("data", "shapes")
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        reg.validate({"holdout": ["red hexagon"]})
    with pytest.raises(ValueError, match="unknown colour 'orange'"):
        reg.validate({"holdout": ["orange circle"]})
    with pytest.raises(ValueError, match="two words"):
        reg.validate({"holdout": ["red"]})
    with pytest.raises(ValueError, match="every colour"):
        reg.validate({"holdout": [f"{c} {s}" for c in PALETTE for s in MASK_CLASSES]})
    with pytest.raises(ValueError, match="image_size"):
        reg.validate({"image_size": 25})
    with pytest.raises(ValueError, match="object_weights"):
        reg.validate({"max_objects": 2, "object_weights": [1.0]})
    with pytest.raises(ValueError, match="imagesize"):
        reg.validate({"imagesize": 32})


def test_holdout_is_exposed_normalised() -> None:
    d = build_one("data", "shapes", {"holdout": ["Yellow Triangle", "yellow triangle"]})
    assert d.holdout == ("yellow triangle",)


def test_registered() -> None:
    reg = modiff.registry()
    assert {"shapes", "image-folder"} <= set(reg.names("data"))
    assert "prompt-accuracy" in reg.names("evaluator")
    assert reg.lookup("data", "shapes").distribution == "modiff-datasets"
