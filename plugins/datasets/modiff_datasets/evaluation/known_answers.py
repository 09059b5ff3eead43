"""A known-answer set that looks like generated images.

Drawn scenes are too clean to tell how often the evaluator misreads what a
model draws (soft corners, uneven fills, faint halos); generated images have
no known answer. The set joins the two: scenes of the shapes world are drawn,
noised to a middle level and denoised from there by a trained run with their
own caption (image-to-image), so each image carries the model's artefacts
while its colours, shapes and cells are those of the scene it started from.

An image is kept only while that answer is still certain, judged against the
source render's own object masks and never with the evaluator's rules (see
:func:`uncertainty`). Everything is a pure function of the seed and the run:
scene ``i`` is the world's scene ``(seed, i)``, image-to-image sample ``i``
uses generation seed ``seed + i``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..shapes.drawing import placed_box, render, stencil
from ..shapes.sampler import SceneSampler
from ..shapes.world import COLOURS, PALETTE, SHAPES, ShapeObject
from .blobs import label_components

#: Image-to-image strength of the committed set: the last 60 % of the sampler's
#: steps are run, so the model redraws edges, fills and background while the
#: layout (which the high-noise steps decide) is still the scene's.
DEFAULT_STRENGTH = 0.6

#: An object's pixels in the output: those showing at least this fraction of its
#: palette colour (projection onto the colour), near its box.
PRESENCE = 0.5
#: The output's object region must overlap the source mask at least this much (IoU,
#: at the best shift of up to ``SHIFT`` pixels: a model may redraw a shape a pixel off)...
MIN_IOU = 0.7
SHIFT = 1
#: ...and more than the same box's other shapes by this much, or the image no longer says which shape it is.
SHAPE_MARGIN = 0.1
#: The mean colour of the object's core must lie at most this fraction of its
#: distance to the second-nearest palette direction from the nearest one.
COLOUR_MARGIN = 0.6
#: Outside every object's box (grown by ``BOX_MARGIN`` pixels), no bright group
#: (largest channel >= ``STRAY_LEVEL``) of ``STRAY_PIXELS`` pixels or more.
BOX_MARGIN = 2
STRAY_LEVEL = 128
STRAY_PIXELS = 3

_UNIT = np.array([PALETTE[c] for c in COLOURS], dtype=np.float64)
_UNIT /= np.linalg.norm(_UNIT, axis=1, keepdims=True)


def _object_mask(obj: ShapeObject, image_size: int, shape: str | None = None) -> np.ndarray:
    """``[H, W]`` bool: the pixels ``obj`` covers (as ``shape`` if given) in the source render."""
    x0, y0, s = placed_box(obj, image_size)
    out = np.zeros((image_size, image_size), dtype=bool)
    out[y0 : y0 + s, x0 : x0 + s] = stencil(shape or obj.shape, s)
    return out


def _grown_box(obj: ShapeObject, image_size: int, margin: int) -> np.ndarray:
    x0, y0, s = placed_box(obj, image_size)
    out = np.zeros((image_size, image_size), dtype=bool)
    out[max(0, y0 - margin) : y0 + s + margin, max(0, x0 - margin) : x0 + s + margin] = True
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


def _best_iou(region: np.ndarray, mask: np.ndarray) -> float:
    """IoU of ``region`` with ``mask`` shifted by up to ``SHIFT`` pixels each way, at its best."""
    padded = np.pad(mask, SHIFT)
    size = mask.shape[0]
    return max(
        _iou(region, padded[SHIFT + dy : SHIFT + dy + size, SHIFT + dx : SHIFT + dx + size])
        for dy in range(-SHIFT, SHIFT + 1)
        for dx in range(-SHIFT, SHIFT + 1)
    )


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose four neighbours are in ``mask`` too (the mask itself if that leaves nothing)."""
    m = np.pad(mask, 1)
    core = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return core if core.any() else mask


def uncertainty(image: np.ndarray, objects: Sequence[ShapeObject]) -> str | None:
    """Why the scene's answer is no longer certain for ``image`` (``[H, W, 3]``
    uint8), or ``None`` when it still is.

    Each rule compares the image with the source render's masks, not with the
    evaluator's reading: per object, its region (pixels near its box showing at
    least half of its palette colour) overlaps its own mask by IoU >= 0.7 and
    that by 0.1 more than any other shape's mask in the same box, each at its
    best shift of at most a pixel (shape and place hold: a one-pixel shift
    never leaves the cell);
    the mean colour of the mask's core points nearest to the object's palette
    colour, at most 0.6 as far from it as from the next one (colour holds);
    no bright path joins two objects (the world never draws touching shapes,
    and whether joined ones are one object or two is not certain); and
    outside the grown boxes no bright group of three or more pixels appeared
    (count holds). Bright: largest channel at least 128.
    """
    size = image.shape[0]
    rgb = image.astype(np.float64)
    for obj in objects:
        colour = np.array(PALETTE[obj.colour], dtype=np.float64)
        presence = (rgb @ colour) / float(colour @ colour)
        region = (presence >= PRESENCE) & _grown_box(obj, size, BOX_MARGIN)
        own = _best_iou(region, _object_mask(obj, size))
        if own < MIN_IOU:
            return "shape or place changed"
        others = [_best_iou(region, _object_mask(obj, size, s)) for s in SHAPES if s != obj.shape]
        if own < max(others) + SHAPE_MARGIN:
            return "shape ambiguous"
        mean = rgb[_erode(_object_mask(obj, size))].mean(axis=0)
        cos = _UNIT @ (mean / max(np.linalg.norm(mean), 1e-9))
        dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * cos))  # chord between unit directions
        order = np.argsort(dist)
        if COLOURS[int(order[0])] != obj.colour or dist[order[0]] > COLOUR_MARGIN * dist[order[1]]:
            return "colour changed"
    bright = image.max(axis=2) >= STRAY_LEVEL
    if len(objects) > 1:
        labels, _ = label_components(bright)
        touched = [set(labels[_object_mask(obj, size)].tolist()) - {-1} for obj in objects]
        if any(a & b for i, a in enumerate(touched) for b in touched[i + 1 :]):
            return "objects joined"
    boxes = np.zeros((size, size), dtype=bool)
    for obj in objects:
        boxes |= _grown_box(obj, size, BOX_MARGIN)
    labels, count = label_components(bright & ~boxes)
    if count and np.bincount(labels[labels >= 0]).max() >= STRAY_PIXELS:
        return "extra object"
    return None


@dataclass
class KnownAnswers:
    """Images with the objects they are known to show.

    Attributes:
        images: ``[N, H, W, 3]`` uint8, the kept image-to-image outputs.
        objects: per image, the source scene's objects (with their origins).
        indices: per image, its scene index in the world ``(seed, index)``.
        seed, strength, image_size, run: how the set was made.
        considered: scenes drawn; ``dropped``: why the others were left out.
    """

    images: np.ndarray
    objects: list[tuple[ShapeObject, ...]]
    indices: list[int]
    seed: int
    strength: float
    image_size: int
    run: str = ""
    considered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    def sources(self) -> np.ndarray:
        """``[N, H, W, 3]`` uint8: the drawn scenes the images started from."""
        return np.stack([render(objs, self.image_size)[0] for objs in self.objects])

    def subset(self, keep: Sequence[int]) -> KnownAnswers:
        keep = list(keep)
        return KnownAnswers(
            self.images[keep], [self.objects[i] for i in keep], [self.indices[i] for i in keep],
            self.seed, self.strength, self.image_size, self.run, self.considered, dict(self.dropped),
        )

    def meta(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "strength": self.strength,
            "image_size": self.image_size,
            "run": self.run,
            "considered": self.considered,
            "kept": len(self),
            "dropped": self.dropped,
            "indices": self.indices,
        }

    def save(self, path: Path) -> None:
        """One ``.npz``: the images and the metadata as JSON (objects are redrawn from the seed)."""
        np.savez_compressed(path, images=self.images, meta=np.array(json.dumps(self.meta())))

    @classmethod
    def load(cls, path: Path) -> KnownAnswers:
        with np.load(path) as data:
            images = data["images"]
            meta = json.loads(str(data["meta"]))
        sampler = scene_sampler(meta["seed"], meta["image_size"])
        return cls(
            images=images,
            objects=[sampler.scene(i).objects for i in meta["indices"]],
            indices=list(meta["indices"]),
            seed=meta["seed"],
            strength=meta["strength"],
            image_size=meta["image_size"],
            run=meta.get("run", ""),
            considered=meta["considered"],
            dropped=dict(meta["dropped"]),
        )


def scene_sampler(seed: int, image_size: int) -> SceneSampler:
    """The scenes of a known-answer set: one or two objects, every colour–shape pair."""
    return SceneSampler(seed=seed, image_size=image_size, max_objects=2)


def to_uint8(images: Any) -> np.ndarray:
    """``[B, 3, H, W]`` in [-1, 1] (a tensor or array) to ``[B, H, W, 3]`` uint8, as images are saved."""
    a = np.asarray(images.cpu().numpy() if hasattr(images, "cpu") else images, dtype=np.float32)
    return np.clip(np.rint((a.transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_known_answers(
    pipeline: Any,
    count: int,
    *,
    seed: int,
    strength: float = DEFAULT_STRENGTH,
    batch_size: int = 64,
    run: str = "",
) -> KnownAnswers:
    """Draw ``count`` scenes from ``seed``, redraw each with ``pipeline`` by
    image-to-image at ``strength`` with its own caption, and keep those whose
    answer is still certain (:func:`uncertainty`).

    ``pipeline`` needs ``image_size`` and ``generate_tensor(prompts, init_images=,
    strength=, seed=, batch_size=)`` (a :class:`modiff.Pipeline`).
    """
    size = int(pipeline.image_size)
    sampler = scene_sampler(seed, size)
    scenes = [sampler.scene(i) for i in range(count)]
    sources = np.stack([render(s.objects, size)[0] for s in scenes])
    import torch

    init = torch.from_numpy(sources.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)
    out = pipeline.generate_tensor(
        [s.caption for s in scenes], init_images=init, strength=strength, seed=seed, batch_size=batch_size
    )
    images = to_uint8(out)
    kept, dropped = [], {}
    for i, (scene, image) in enumerate(zip(scenes, images)):
        reason = uncertainty(image, scene.objects)
        if reason is None:
            kept.append(i)
        else:
            dropped[reason] = dropped.get(reason, 0) + 1
    return KnownAnswers(
        images=images[kept],
        objects=[scenes[i].objects for i in kept],
        indices=kept,
        seed=seed,
        strength=strength,
        image_size=size,
        run=run,
        considered=count,
        dropped=dict(sorted(dropped.items())),
    )
