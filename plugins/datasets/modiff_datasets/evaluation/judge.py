"""A learned judge: the rules' blobs, each read by a small classifier trained
on the known-answer set.

The rules decide a blob's shape from two numbers (fill ratio, centroid
offset), which generated images bend: rounded corners make a square's fill
fall towards a circle's, uneven fills and halos shift both. The judge keeps
what the rules do well (foreground, blobs, the cell from the centroid, the
colour from the nearest palette colour, which errs least of all) and replaces
the reading that misfires: each blob's shape, now one of circle, square,
triangle or "not an object" (a smear, a halo, a speck), by a softmax
regression on a few dozen features of the blob (its brightness resampled onto
an 8 × 8 grid over its box, its fill, offset, aspect and size, its mean
colour and hue).

Training is plain full-batch gradient descent in float64 numpy from zero
weights, so the same set gives the same weights on any machine; the weights
(a few hundred numbers) are committed as ``judge.json`` beside this module,
written by ``benchmarks/evaluator_error.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..shapes.drawing import stencil
from ..shapes.world import COLOURS, SHAPES, cell_of, side
from .blobs import Blob, label_components, measure, split_at_cores
from .check import Detection, nearest_colour

WEIGHTS = Path(__file__).with_name("judge.json")

#: A blob's shape class: the world's shapes and "not an object".
NONE = "none"
SHAPE_CLASSES: tuple[str, ...] = (*SHAPES, NONE)
#: Candidate blobs: pixels whose largest channel exceeds this, in components of at least 2 pixels.
THRESHOLD = 100
MIN_PIXELS = 2
GRID = 8
#: Two objects joined by a faint bridge are split where each keeps a bright core:
#: pixels whose largest channel reaches this (an object's fill: the dimmest palette
#: colour, green, reaches 200; a halo or smear between objects is fainter), in
#: groups of at least ``CORE_FRACTION`` × (small side)² pixels (the rules' smallest
#: object), so a triangle's thin apex or a speck never splits a shape in two.
CORE_LEVEL = 150
CORE_FRACTION = 0.15


def _resample(crop: np.ndarray, n: int = GRID) -> np.ndarray:
    """``crop`` ``[h, w]`` bilinearly resampled to ``[n, n]`` (pixel centres aligned)."""
    h, w = crop.shape
    ys = np.clip((np.arange(n) + 0.5) * h / n - 0.5, 0, h - 1)
    xs = np.clip((np.arange(n) + 0.5) * w / n - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = crop[y0][:, x0] * (1 - fx) + crop[y0][:, x1] * fx
    bottom = crop[y1][:, x0] * (1 - fx) + crop[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def template_fit(core: np.ndarray, image_size: int) -> list[float]:
    """Per shape, how well the blob's core (``[h, w]`` bool, its box) matches the
    world's stencil of that shape: the best IoU over both sizes and every
    placement of the stencil overlapping the core's box (a generated shape is
    softer than its stencil, but still closest to its own)."""
    h, w = core.shape
    total = int(core.sum())
    out = []
    for shape in SHAPES:
        best = 0.0
        for size in ("small", "large"):
            n = side(size, image_size)
            st = stencil(shape, n).astype(np.int64)
            canvas = np.zeros((h + 2 * n, w + 2 * n), dtype=np.int64)
            canvas[n : n + h, n : n + w] = core
            windows = np.lib.stride_tricks.sliding_window_view(canvas, (n, n))  # every placement
            inter = np.einsum("ijkl,kl->ij", windows, st)
            best = max(best, float((inter / (total + int(st.sum()) - inter)).max()))
        out.append(best)
    return out


def blob_features(rgb: np.ndarray, labels: np.ndarray, k: int, blob: Blob) -> np.ndarray:
    """The judge's features of blob ``k``: a fixed-length float64 vector."""
    x0, y0, x1, y1 = blob.bbox
    inside = labels[y0 : y1 + 1, x0 : x1 + 1] == k
    bright = rgb[y0 : y1 + 1, x0 : x1 + 1].max(axis=2) / 255.0
    grid = _resample(np.where(inside, bright, 0.0)).ravel()
    core = inside & (bright >= 0.5 * float(np.quantile(bright[inside], 0.9)))
    fits = template_fit(core, rgb.shape[0])
    small = side("small", rgb.shape[0]) ** 2
    mean = np.asarray(blob.mean_colour) / 255.0
    hue = mean / max(float(np.linalg.norm(mean)), 1e-9)
    scalars = [
        blob.fill_ratio,
        blob.vertical_offset,
        blob.width / blob.height,
        blob.area / small,
        np.log(blob.area),
        float(bright[inside].mean()),
    ]
    return np.concatenate([grid, scalars, mean, hue, fits])


def candidates(image: np.ndarray) -> tuple[np.ndarray, list[int], np.ndarray, list[Blob]]:
    """``(labels, ids, features, blobs)`` of an ``[H, W, 3]`` uint8 image's candidate
    blobs: ``ids`` are their labels in ``labels``. A component holding two bright
    cores is two blobs (:func:`.blobs.split_at_cores`)."""
    brightest = image.max(axis=2)
    labels, count = label_components(brightest > THRESHOLD)
    min_core = max(2, math.ceil(CORE_FRACTION * side("small", image.shape[0]) ** 2))
    labels, count = split_at_cores(labels, count, brightest >= CORE_LEVEL, min_core)
    blobs = measure(labels, count, image)
    keep = [k for k, b in enumerate(blobs) if b.area >= MIN_PIXELS]
    feats = np.array([blob_features(image, labels, k, blobs[k]) for k in keep]) if keep else np.zeros((0, 0))
    return labels, keep, feats, [blobs[k] for k in keep]


@dataclass(frozen=True)
class Softmax:
    """A multinomial logistic regression on standardised features."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # [features + 1, classes]

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        return np.hstack([z, np.ones((len(z), 1))]) @ self.weights

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)

    def to_dict(self) -> dict[str, list]:
        return {k: np.round(getattr(self, k), 6).tolist() for k in ("mean", "scale", "weights")}

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> Softmax:
        return cls(*(np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "weights")))


def fit_softmax(
    x: np.ndarray, y: np.ndarray, classes: int, *, steps: int = 2000, lr: float = 0.5, l2: float = 1e-3
) -> Softmax:
    """Full-batch gradient descent from zero weights: deterministic. Classes are
    balanced (each class's examples share one total weight), except that no
    example weighs more than a class of an even share would give it: a class
    with one example (a single speck) must not weigh as much as a shape."""
    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 1e-9, x.std(axis=0), 1.0)
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    weight = (1.0 / np.maximum(counts, len(y) / classes))[y]
    weight /= weight.sum()
    onehot = np.eye(classes)[y]
    w = np.zeros((z.shape[1], classes))
    for _ in range(steps):
        logits = z @ w
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = z.T @ ((p - onehot) * weight[:, None]) + l2 * np.vstack([w[:-1], np.zeros((1, classes))])
        w -= lr * grad
    return Softmax(mean, scale, w)


@dataclass(frozen=True)
class Judge:
    """Reads images with the trained shape classifier (see the module's docstring)."""

    shape: Softmax

    def read(self, image: np.ndarray) -> list[Detection]:
        """The objects in an ``[H, W, 3]`` uint8 image, largest first."""
        _, _, feats, blobs = candidates(np.asarray(image))
        if not blobs:
            return []
        size = image.shape[0]
        found = [
            Detection(nearest_colour(b.mean_colour), SHAPE_CLASSES[int(s)], cell_of(*b.centroid, size), b)
            for s, b in zip(self.shape.predict(feats), blobs)
            if SHAPE_CLASSES[int(s)] != NONE
        ]
        found.sort(key=lambda d: (-d.blob.area, d.blob.bbox[1], d.blob.bbox[0]))
        return found

    __call__ = read

    def to_dict(self) -> dict[str, object]:
        return {"shape": self.shape.to_dict(), "shape_classes": list(SHAPE_CLASSES)}

    def save(self, path: Path = WEIGHTS) -> None:
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> Judge:
        d = json.loads(path.read_text())
        return cls(Softmax.from_dict(d["shape"]))


@lru_cache(maxsize=1)
def committed_judge() -> Judge:
    """The committed judge (``judge.json``); a clear error when it is missing."""
    if not WEIGHTS.is_file():
        raise FileNotFoundError(
            f"{WEIGHTS} is missing: the learned judge's weights are written by benchmarks/evaluator_error.py"
        )
    return Judge.load(WEIGHTS)


def labelled_blobs(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], objects: Sequence[Sequence]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training examples: every candidate blob's features, its shape class and
    colour index. ``masks[i]`` is ``[H, W]`` int with ``k + 1`` on object ``k``'s
    source pixels; a blob is the object most of its pixels cover, or "not an
    object" when under half of them cover any (its colour label then is the
    nearest object's, which the colour classifier does not see: see ``fit``)."""
    feats, shapes, colours = [], [], []
    for image, mask, objs in zip(images, masks, objects):
        labels, kept, f, _ = candidates(image)
        for row, k in zip(f, kept):
            cover = np.bincount(mask[labels == k], minlength=len(objs) + 1)
            best = int(np.argmax(cover[1:])) if len(objs) else 0
            on = cover[1:].max() if len(objs) else 0
            feats.append(row)
            if on * 2 < cover.sum():
                shapes.append(SHAPE_CLASSES.index(NONE))
                colours.append(-1)
            else:
                shapes.append(SHAPE_CLASSES.index(objs[best].shape))
                colours.append(COLOURS.index(objs[best].colour))
    return np.array(feats), np.array(shapes, dtype=np.int64), np.array(colours, dtype=np.int64)


def fit(feats: np.ndarray, shapes: np.ndarray, colours: np.ndarray) -> Judge:
    """Train the judge on :func:`labelled_blobs`' examples (the colours are for
    checks only: the judge reads colour with the rules' nearest palette colour)."""
    return Judge(shape=fit_softmax(feats, shapes, len(SHAPE_CLASSES)))
