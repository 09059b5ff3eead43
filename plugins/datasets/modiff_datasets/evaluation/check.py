"""Reading a shapes-world image without a learned model, and scoring it
against the objects a prompt names.

The steps, each a fixed rule (see ``docs/datasets.md``):

1. Foreground: pixels whose largest channel exceeds ``threshold`` (default
   100; the background is black and the dimmest palette colour, green, has a
   largest channel of 200).
2. Blobs: 4-connected components of the foreground; blobs smaller than
   ``min_area_fraction`` × (small side)² pixels are noise and ignored
   (default 0.15, about 30 % of the smallest shape, a small triangle).
3. Each blob's colour is the palette colour nearest to its mean colour
   (Euclidean RGB, allowing the blob to be uniformly dimmer, down to 50 %);
   its cell the grid cell of its centroid; its shape from its fill ratio
   (area / bounding-box area): from ``square_from`` (0.9) a square, below
   ``triangle_below`` (0.65) a triangle, a circle between, unless the
   centroid lies at least ``triangle_offset`` (0.05) of the blob's height
   below its box's middle, which only an apex-up triangle does (+0.13..0.17
   when drawn; circles and squares are symmetric, 0). Drawn shapes measure
   fill 0.50–0.56, 0.755–0.89 and 1.0 at every supported size; the offset
   cue keeps small triangles readable when a generator blurs them (a 3 × 3
   blur lifts a 7-pixel triangle's fill to 0.73 but leaves its offset above
   0.065).
4. Named objects are matched one-to-one to blobs, choosing the matching that
   agrees on the most attributes. The image is correct when every object's
   blob has the right colour, shape and cell and there are no other blobs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..shapes.world import CELLS, COLOURS, PALETTE, ShapeObject, cell_of, side
from .blobs import Blob, label_components, measure

_PALETTE = np.array([PALETTE[c] for c in COLOURS], dtype=np.float64)


@dataclass(frozen=True)
class Thresholds:
    """The checker's rules; defaults are the documented ones."""

    threshold: int = 100
    min_area_fraction: float = 0.15
    triangle_below: float = 0.65
    square_from: float = 0.9
    triangle_offset: float = 0.05

    def min_area(self, image_size: int) -> int:
        """Smallest blob that counts as an object at ``image_size``."""
        return max(2, math.ceil(self.min_area_fraction * side("small", image_size) ** 2))


@dataclass(frozen=True)
class Detection:
    """A blob read as an object."""

    colour: str
    shape: str
    cell: int
    blob: Blob

    def to_dict(self) -> dict[str, object]:
        return {
            "colour": self.colour,
            "shape": self.shape,
            "position": CELLS[self.cell],
            "area": self.blob.area,
            "fill_ratio": round(self.blob.fill_ratio, 3),
            "vertical_offset": round(self.blob.vertical_offset, 3),
            "centroid": [round(v, 2) for v in self.blob.centroid],
            "mean_colour": [round(v, 1) for v in self.blob.mean_colour],
        }


@dataclass(frozen=True)
class CheckResult:
    """How an image fares against the objects its prompt names.

    ``colour``, ``shape`` and ``position`` are true when every named object's
    matched blob has that attribute right (a missing blob gets all wrong;
    an object without a cell has its position right wherever it is);
    ``count`` when there are exactly as many blobs as named objects;
    ``correct`` when all four hold. ``objects_correct`` counts named objects
    found entirely right (partial credit).
    """

    correct: bool
    colour: bool
    shape: bool
    position: bool
    count: bool
    objects_correct: int
    detections: tuple[Detection, ...]
    matches: tuple[int | None, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return {
            "correct": self.correct,
            "colour": self.colour,
            "shape": self.shape,
            "position": self.position,
            "count": self.count,
            "objects_correct": self.objects_correct,
            "found": [d.to_dict() for d in self.detections],
        }


#: A blob may be this much dimmer than its palette colour and still match it:
#: the mean over a generated shape includes its soft, darker edge pixels.
MIN_BRIGHTNESS = 0.5


def nearest_colour(mean_rgb: Sequence[float]) -> str:
    """The palette colour closest to ``mean_rgb`` (RGB 0..255).

    Distance is Euclidean to the colour scaled by the brightness that fits
    best, limited to ``MIN_BRIGHTNESS``..1: a uniformly dimmer red is still
    red (plain nearest-colour would call a cyan at 65 % brightness green),
    while hue differences count in full. Exact palette colours map to
    themselves, since no palette colour is a dimmed version of another.
    """
    m = np.asarray(mean_rgb, dtype=np.float64)
    k = np.clip((_PALETTE @ m) / (_PALETTE * _PALETTE).sum(1), MIN_BRIGHTNESS, 1.0)
    d = ((_PALETTE * k[:, None] - m) ** 2).sum(1)
    return COLOURS[int(np.argmin(d))]


def classify_shape(fill_ratio: float, vertical_offset: float = 0.0, thresholds: Thresholds = Thresholds()) -> str:
    """Square, circle or triangle from a blob's fill ratio and the offset of
    its centroid below its box's middle (as a fraction of its height)."""
    if fill_ratio >= thresholds.square_from:
        return "square"
    if fill_ratio < thresholds.triangle_below or vertical_offset >= thresholds.triangle_offset:
        return "triangle"
    return "circle"


def detect(image: np.ndarray, thresholds: Thresholds = Thresholds()) -> list[Detection]:
    """The objects in an ``[H, W, 3]`` uint8 image, largest first."""
    rgb = _as_rgb(image)
    size = rgb.shape[0]
    labels, count = label_components(rgb.max(axis=2) > thresholds.threshold)
    min_area = thresholds.min_area(size)
    blobs = [b for b in measure(labels, count, rgb) if b.area >= min_area]
    blobs.sort(key=lambda b: (-b.area, b.bbox[1], b.bbox[0]))
    return [
        Detection(
            colour=nearest_colour(b.mean_colour),
            shape=classify_shape(b.fill_ratio, b.vertical_offset, thresholds),
            cell=cell_of(b.centroid[0], b.centroid[1], size),
            blob=b,
        )
        for b in blobs
    ]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected a square [H, W, 3] RGB image, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels 0..255, got {a.dtype}")
    return a


def _agreement(obj: ShapeObject, det: Detection | None) -> tuple[bool, bool, bool]:
    if det is None:
        return (False, False, False)
    return (det.colour == obj.colour, det.shape == obj.shape, obj.cell is None or det.cell == obj.cell)


#: Blobs considered when matching (the largest); an image with more is wrong
#: anyway, and the cap keeps matching cheap on noise.
MAX_MATCH_BLOBS = 12


def _best_matching(objects: Sequence[ShapeObject], dets: Sequence[Detection]) -> tuple[int | None, ...]:
    """For each object, the index of its blob (or ``None``), maximising the
    number of agreeing attributes; exhaustive for up to 3 objects, greedy beyond."""
    k = len(objects)
    m = min(len(dets), MAX_MATCH_BLOBS)
    choices = list(range(m)) + [None] * k  # None: no blob for this object

    def score(assign: Sequence[int | None]) -> tuple[int, int]:
        agree = [_agreement(o, None if a is None else dets[a]) for o, a in zip(objects, assign)]
        return (sum(all(x) for x in agree), sum(sum(x) for x in agree))

    if k <= 3:
        best: tuple[int | None, ...] = tuple([None] * k)
        best_score = score(best)
        for assign in itertools.permutations(choices, k):
            s = score(assign)
            if s > best_score:
                best, best_score = tuple(assign), s
        return best
    taken: set[int] = set()
    out: list[int | None] = []
    for obj in objects:
        options = [j for j in range(m) if j not in taken]
        j = max(options, key=lambda j: (all(_agreement(obj, dets[j])), sum(_agreement(obj, dets[j]))), default=None)
        if j is not None and sum(_agreement(obj, dets[j])) == 0:
            j = None
        if j is not None:
            taken.add(j)
        out.append(j)
    return tuple(out)


def check_image(
    image: np.ndarray, objects: Sequence[ShapeObject], thresholds: Thresholds = Thresholds()
) -> CheckResult:
    """Score an ``[H, W, 3]`` uint8 image against the objects its prompt names.

    A pure function of its arguments: the ground-truth render of ``objects``
    scores correct at every supported size, and anything else (another colour,
    cell or shape, an extra or missing object, a blank image) does not.
    """
    if not objects:
        raise ValueError("check_image needs at least one named object")
    return score(detect(image, thresholds), objects)


def score(dets: Sequence[Detection], objects: Sequence[ShapeObject]) -> CheckResult:
    """Score what a reader found (``dets``, largest first) against the objects a
    prompt names: the one verdict rule every reader shares (the rules of
    :func:`detect`, the learned judge, the known answers themselves)."""
    if not objects:
        raise ValueError("scoring needs at least one named object")
    dets = list(dets)
    matches = _best_matching(objects, dets)
    agree = [_agreement(o, None if j is None else dets[j]) for o, j in zip(objects, matches)]
    colour = all(a[0] for a in agree)
    shape = all(a[1] for a in agree)
    position = all(a[2] for a in agree)
    count = len(dets) == len(objects)
    return CheckResult(
        correct=colour and shape and position and count,
        colour=colour,
        shape=shape,
        position=position,
        count=count,
        objects_correct=sum(all(a) for a in agree),
        detections=tuple(dets),
        matches=matches,
    )
