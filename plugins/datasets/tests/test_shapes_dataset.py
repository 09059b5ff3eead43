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
    with pytest.raises(ValueError, match="unsized"):
        reg.validate({"unsized": "small"})
    with pytest.raises(ValueError, match="jitter"):
        reg.validate({"jitter": 0.75})
    with pytest.raises(ValueError, match="jitter"):
        reg.validate({"jitter": -0.1})
    with pytest.raises(ValueError, match="jitter = 0.0 has no effect with overlap"):
        reg.validate({"jitter": 0.0, "overlap": True})
    with pytest.raises(ValueError, match="has no effect with overlap"):
        reg.validate({"jitter": 0.125, "overlap": True})  # set by the user, even at its default
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


# -- harder segmentation targets: noise and overlap ------------------------------------------


def _fingerprint(d) -> str:
    import hashlib

    h = hashlib.sha256()
    for i in range(len(d)):
        e = d[i]
        h.update(e.image.numpy().tobytes())
        h.update(e.mask.numpy().tobytes())
        h.update(e.caption.encode())
    return h.hexdigest()[:16]


def test_the_default_settings_render_what_they_rendered_before_noise_and_overlap() -> None:
    """Fingerprints taken with the renderer before `noise` and `overlap` existed."""
    held = {"size": 40, "max_objects": 2, "holdout": ["yellow triangle"]}
    assert _fingerprint(build_one("data", "shapes", held)) == "6bda1193cd787f1b"
    same = {"size": 20, "image_size": 64, "max_objects": 3, "seed": 5}
    assert _fingerprint(build_one("data", "shapes", same)) == "fa771a42166920b7"
    assert _fingerprint(build_one("data", "shapes", {**same, "noise": 0.0, "overlap": False})) == "fa771a42166920b7"


def test_noise_is_deterministic_clipped_and_leaves_masks_and_captions() -> None:
    clean = build_one("data", "shapes", {"size": 30, "max_objects": 2})
    noisy = build_one("data", "shapes", {"size": 30, "max_objects": 2, "noise": 0.4})
    again = build_one("data", "shapes", {"size": 30, "max_objects": 2, "noise": 0.4})
    other_seed = build_one("data", "shapes", {"size": 30, "max_objects": 2, "noise": 0.4, "seed": 1})
    diffs = []
    for i in range(30):
        a, b = clean[i], noisy[i]
        assert torch.equal(b.image, again[i].image), "a pure function of (seed, index)"
        assert torch.equal(a.mask, b.mask) and a.caption == b.caption
        assert float(b.image.min()) >= -1.0 and float(b.image.max()) <= 1.0
        assert not torch.equal(b.image, a.image)
        diffs.append(b.image - a.image)
    assert not torch.equal(noisy[0].image, noisy[1].image)
    assert not torch.equal(noisy[0].image - clean[0].image, other_seed[0].image - build_one(
        "data", "shapes", {"size": 30, "max_objects": 2, "seed": 1})[0].image)
    # away from the clipping edges the noise has the set spread and no bias
    stacked_clean = torch.stack([clean[i].image for i in range(30)])
    inner = (stacked_clean > -0.6) & (stacked_clean < 0.6)
    d = torch.stack(diffs)[inner]
    assert d.numel() > 1000 and abs(float(d.mean())) < 0.03 and float(d.std()) == pytest.approx(0.4, rel=0.1)


def test_overlap_lets_shapes_cover_each_other_and_the_mask_shows_the_visible_one() -> None:
    from modiff_datasets.shapes.world import boxes_apart, cell_of, side

    d = build_one("data", "shapes", {"size": 300, "max_objects": 4, "overlap": True, "image_size": 64})
    overlapping = 0
    for i in range(300):
        scene, ex = d.scene(i), d[i]
        boxes = [(*o.origin, side(o.size, 64)) for o in scene.objects]
        for o, (x0, y0, s) in zip(scene.objects, boxes):  # the caption's cell still holds the centre
            assert cell_of(x0 + s / 2, y0 + s / 2, 64) == o.cell
        if any(not boxes_apart(a, b, gap=0) for k, a in enumerate(boxes) for b in boxes[k + 1 :]):
            overlapping += 1
        top = scene.objects[-1]  # drawn last: its whole stencil is visible in the mask
        _, mask = render([top], 64, overlap=True)
        drawn = mask > 0
        assert torch.equal(ex.mask[torch.from_numpy(drawn)], torch.from_numpy(mask[drawn]))
    assert overlapping >= 30, overlapping
    assert build_one("data", "shapes", {"size": 5, "overlap": True}).scene(0).caption == build_one(
        "data", "shapes", {"size": 5})[0].caption


def test_render_refuses_touching_shapes_unless_overlap() -> None:
    from modiff_datasets.shapes import ShapeObject

    a = ShapeObject("red", "square", 0, "large", (2, 2))
    b = ShapeObject("blue", "circle", 1, "large", (8, 4))
    with pytest.raises(ValueError, match="touches or overlaps"):
        render([a, b], 32)
    rgb, mask = render([a, b], 32, overlap=True)
    assert mask[6, 10] == MASK_CLASSES["circle"] and tuple(rgb[6, 10]) == PALETTE["blue"]  # b covers a
    assert mask[3, 3] == MASK_CLASSES["square"]


@pytest.mark.parametrize(
    ("settings", "match"), [({"noise": -0.1}, "noise"), ({"noise": 3}, "noise"), ({"overlap": "sometimes"}, "overlap")]
)
def test_noise_and_overlap_are_validated(settings: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        modiff.registry().lookup("data", "shapes").validate(settings)
