"""Drawing random scenes, deterministically from ``(seed, index)``.

Each index gets its own ``numpy.random.Generator`` seeded with
``SeedSequence([seed, index])``, so example ``i`` is the same whatever else was
drawn before, in any process, on any machine with the same numpy.

What a scene is (how many objects, their cells, colour–shape pairs and sizes,
and the caption template) is drawn first and does not depend on the image
size; where each shape sits within its cell is drawn after it, from the same
generator, so that a run at 32 px and one at 64 px share their captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .captions import TEMPLATES, caption
from .world import (
    MAX_JITTER,
    OVERLAP_JITTER,
    SIZES,
    ShapeObject,
    allowed_pairs,
    boxes_apart,
    candidate_origins,
    centred_origin,
    check_image_size,
    side,
    validate_holdout,
)

#: Third entry of the seed of the generator that decides whether example
#: ``(seed, i)``'s caption leaves the place out, so that deciding it draws
#: nothing from the scene's generator (the scene is the same at any share).
UNPLACED_STREAM = 2

#: Attempts at drawing non-touching jittered positions before falling back to
#: the centred positions (which never touch: see ``check_image_size``).
PLACEMENT_TRIES = 32


@dataclass(frozen=True)
class Scene:
    """A sampled example before rendering."""

    objects: tuple[ShapeObject, ...]
    caption: str
    template: int


class SceneSampler:
    """Scenes of the shapes world for one configuration.

    Args:
        seed: the dataset's seed.
        image_size: canvas side in pixels.
        max_objects: most objects per image (each in its own cell, so at most 9).
        holdout: ``"colour shape"`` pairs never drawn.
        object_weights: relative weights of 1, 2, ..., ``max_objects``
            objects; ``None`` means equally likely.
        overlap: place each shape's centre anywhere in its cell (not within
            1/8 of a cell of its centre) and let neighbours touch and overlap.
            What a scene shows and its caption are unchanged; only positions
            differ, drawn once from the same generator.
        unsized: what a shape that a caption leaves unsized may be. ``"any"``:
            either size (a template that says no size is used whatever the
            sizes). ``"said"``: large, because the caption says "small" for
            every small shape (the same scenes, other captions). ``"large"``:
            large, because a scene whose template says no size draws its
            shapes large (the same captions, other scenes). The last two make
            a caption without a size word mean what a prompt without one
            means in this world (:class:`ShapeObject` with ``size=None``
            renders large). The same random numbers are drawn in every mode.
        jitter: how far (in cells) a shape's centre may lie from its cell's
            centre without ``overlap``; 0 places every shape at
            :func:`centred_origin`. The same random numbers are drawn either way.
        unplaced: the share of captions that name no position for any of
            their objects ("a red circle"), so that the model learns what a
            prompt without a place means (any cell); decided per example
            from a generator of its own, so scenes do not change with it, and
            0 leaves every caption as it was.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        image_size: int = 32,
        max_objects: int = 1,
        holdout: Sequence[str] = (),
        object_weights: Sequence[float] | None = None,
        overlap: bool = False,
        unsized: str = "any",
        jitter: float = MAX_JITTER,
        unplaced: float = 0.0,
    ) -> None:
        if not 1 <= max_objects <= 9:
            raise ValueError(f"max_objects must be 1..9 (one object per grid cell), got {max_objects}")
        self.seed = int(seed)
        self.image_size = check_image_size(int(image_size))
        self.max_objects = int(max_objects)
        self.holdout = validate_holdout(holdout)
        self.pairs = allowed_pairs(self.holdout)
        self.count_p = _normalise_weights(object_weights, self.max_objects)
        self.count_cdf = np.cumsum(self.count_p)[:-1]
        self.overlap = bool(overlap)
        if unsized not in ("any", "large", "said"):
            raise ValueError(f"unsized must be 'any', 'large' or 'said', got {unsized!r}")
        self.unsized = unsized
        self._say_small = unsized == "said"
        if not 0.0 <= jitter <= OVERLAP_JITTER:
            raise ValueError(f"jitter must be 0..{OVERLAP_JITTER} of a cell, got {jitter}")
        self.jitter = float(jitter)
        if not 0.0 <= unplaced <= 1.0:
            raise ValueError(f"unplaced must be a share between 0 and 1, got {unplaced}")
        self.unplaced = float(unplaced)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])  # i.e. SeedSequence([seed, index])

    def describe(self, index: int) -> tuple[list[tuple[str, str, int, str]], int]:
        """What example ``index`` shows, without positions: a list of
        ``(colour, shape, cell, size)`` and the caption template number."""
        return self._describe(self._rng(index))

    def _describe(self, rng: np.random.Generator) -> tuple[list[tuple[str, str, int, str]], int]:
        n = 1 + int(np.searchsorted(self.count_cdf, rng.random(), side="right")) if self.max_objects > 1 else 1
        n = min(n, self.max_objects)
        cells = rng.permutation(9)[:n]
        u = rng.random(2 * n + 1)
        template = int(u[0] * len(TEMPLATES))
        picks = (u[1 : n + 1] * len(self.pairs)).astype(np.int64)
        sizes = (u[n + 1 :] * len(SIZES)).astype(np.int64)
        names = list(SIZES)
        if self.unsized == "large" and not TEMPLATES[template].says_size:
            sizes = np.full_like(sizes, names.index("large"))
        parts = [
            (self.pairs[p][0], self.pairs[p][1], int(c), names[int(z)]) for c, p, z in zip(cells, picks, sizes)
        ]
        return parts, template

    def placed(self, index: int) -> bool:
        """Whether example ``index``'s caption names its objects' places
        (false for about the ``unplaced`` share of examples)."""
        if self.unplaced == 0.0:
            return True
        return bool(np.random.default_rng([self.seed, index, UNPLACED_STREAM]).random() >= self.unplaced)

    def caption(self, index: int) -> str:
        """Example ``index``'s caption, without placing or drawing anything."""
        parts, template = self.describe(index)
        objects = [ShapeObject(c, s, cell, z) for c, s, cell, z in parts]
        return caption(objects, template, say_small=self._say_small, placed=self.placed(index))

    def scene(self, index: int) -> Scene:
        """Example ``index``: objects with their exact positions, and caption."""
        rng = self._rng(index)
        parts, template = self._describe(rng)
        boxes = self._place(rng, parts)
        objects = tuple(
            ShapeObject(c, s, cell, z, origin=(b[0], b[1])) for (c, s, cell, z), b in zip(parts, boxes)
        )
        text = caption(objects, template, say_small=self._say_small, placed=self.placed(index))
        return Scene(objects, text, template)

    def _origins(self, cell: int, side_px: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The ``x0`` and ``y0`` values a shape of ``side_px`` may take in ``cell``."""
        if self.jitter == 0.0:
            x, y = centred_origin(cell, side_px, self.image_size)
            return (x,), (y,)
        return candidate_origins(cell, side_px, self.image_size, self.jitter)

    def _place(self, rng: np.random.Generator, parts: list[tuple[str, str, int, str]]) -> list[tuple[int, int, int]]:
        n = self.image_size
        sides = [side(z, n) for _, _, _, z in parts]
        if self.overlap:
            options = [candidate_origins(cell, s, n, OVERLAP_JITTER) for (_, _, cell, _), s in zip(parts, sides)]
            u = rng.random(2 * len(parts))
            return [
                (xs[int(u[2 * k] * len(xs))], ys[int(u[2 * k + 1] * len(ys))], s)
                for k, ((xs, ys), s) in enumerate(zip(options, sides))
            ]
        options = [self._origins(cell, s) for (_, _, cell, _), s in zip(parts, sides)]
        for _ in range(PLACEMENT_TRIES):
            u = rng.random(2 * len(parts))
            boxes = [
                (xs[int(u[2 * k] * len(xs))], ys[int(u[2 * k + 1] * len(ys))], s)
                for k, ((xs, ys), s) in enumerate(zip(options, sides))
            ]
            if _all_apart(boxes):
                return boxes
        boxes = [(*centred_origin(cell, s, n), s) for (_, _, cell, _), s in zip(parts, sides)]
        assert _all_apart(boxes), "centred placement must never touch (check_image_size guarantees it)"
        return boxes


def _all_apart(boxes: list[tuple[int, int, int]]) -> bool:
    return all(boxes_apart(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def _normalise_weights(weights: Sequence[float] | None, max_objects: int) -> np.ndarray:
    if weights is None:
        return np.full(max_objects, 1.0 / max_objects)
    w = np.asarray(list(weights), dtype=np.float64)
    if w.shape != (max_objects,):
        raise ValueError(
            f"object_weights needs one weight per object count 1..{max_objects} "
            f"({max_objects} numbers), got {len(w)}"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"object_weights must be non-negative numbers with a positive sum, got {list(weights)}")
    return w / w.sum()
