"""The shapes world's vocabulary and geometry, as plain data (numpy only).

Everything the renderer, the captioner, the prompt generator and the checker
must agree on lives here, so that they cannot drift apart: the palette, the
3 × 3 grid and its names, the two sizes, and where a shape of a given size may
sit inside a cell (its centre at most 1/8 of a cell from the cell's centre).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

#: Colours, exact RGB, in the order of SHAPES.md.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 60, 220),
    "cyan": (40, 210, 220),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

#: Shape names; the index + 1 is the shape's class in the segmentation mask.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MASK_CLASSES: dict[str, int] = {name: i + 1 for i, name in enumerate(SHAPES)}
NUM_CLASSES = 1 + len(SHAPES)  # background + one class per shape

#: Cell names, row-major: cell ``3 * row + column``.
CELLS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)

#: Bounding-box side as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.22, "large": 0.30}

#: Largest shift of a shape's centre from its cell's centre, in cells, per axis.
MAX_JITTER = 1.0 / 8.0
#: The same with ``overlap``: the centre anywhere in its cell, so neighbours may overlap.
OVERLAP_JITTER = 1.0 / 2.0

#: Every colour–shape pair, as the ``"colour shape"`` strings ``holdout`` uses.
PAIRS: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)

MIN_IMAGE_SIZE = 24


@dataclass(frozen=True)
class ShapeObject:
    """One shape in a scene: what it is and where.

    Attributes:
        colour: a name from :data:`COLOURS`.
        shape: a name from :data:`SHAPES`.
        cell: grid cell ``0..8``, row-major (``CELLS[cell]`` is its name), or
            ``None`` in a parsed prompt that names no position.
        size: ``"small"`` or ``"large"``, or ``None`` when unspecified (a
            parsed prompt without a size word); rendered as ``"large"``.
        origin: ``(x0, y0)``, the top-left pixel of the bounding box at the
            scene's image size, or ``None`` for the position closest to the
            cell's centre. Sampled scenes always carry one.
    """

    colour: str
    shape: str
    cell: int | None
    size: str | None = None
    origin: tuple[int, int] | None = None

    @property
    def pair(self) -> str:
        """``"colour shape"``, as the ``holdout`` setting spells it."""
        return f"{self.colour} {self.shape}"

    @property
    def position(self) -> str | None:
        """The cell's name (``"top left"``), or ``None``."""
        return None if self.cell is None else CELLS[self.cell]

    def to_dict(self) -> dict[str, object]:
        return {
            "colour": self.colour,
            "shape": self.shape,
            "position": self.position,
            "size": self.size,
            "origin": None if self.origin is None else list(self.origin),
        }


def side(size: str | None, image_size: int) -> int:
    """Bounding-box side in pixels: the size's fraction of the image, rounded
    half up (so 0.30 × 32 = 9.6 gives 10)."""
    name = size or "large"
    if name not in SIZES:
        raise ValueError(f"unknown size {size!r}; the sizes are: {', '.join(SIZES)}")
    return int(math.floor(SIZES[name] * image_size + 0.5))


def cell_centre(cell: int, image_size: int) -> tuple[float, float]:
    """``(x, y)`` of the cell's centre in pixel coordinates (pixel ``i`` spans
    ``[i, i + 1)``)."""
    row, col = divmod(cell, 3)
    step = image_size / 3.0
    return ((col + 0.5) * step, (row + 0.5) * step)


def cell_of(x: float, y: float, image_size: int) -> int:
    """The cell holding the point ``(x, y)`` (clamped onto the canvas)."""
    step = image_size / 3.0
    col = min(2, max(0, int(x // step)))
    row = min(2, max(0, int(y // step)))
    return 3 * row + col


@lru_cache(maxsize=4096)
def origins_1d(centre: float, side_px: int, image_size: int, jitter: float = MAX_JITTER) -> tuple[int, ...]:
    """Top-left coordinates along one axis that keep the box's centre within
    ``jitter`` (in cells) of ``centre`` and the box on the canvas.

    Positions are whole pixels, so the allowed jitter is exact after rounding,
    not approximately so.
    """
    limit = jitter * image_size / 3.0 + 1e-9
    lo = math.ceil(centre - limit - side_px / 2.0)
    hi = math.floor(centre + limit - side_px / 2.0)
    out = tuple(v for v in range(lo, hi + 1) if 0 <= v <= image_size - side_px)
    if not out:  # cannot happen for sizes >= MIN_IMAGE_SIZE; guards a bad size
        raise ValueError(f"no position fits a {side_px}px shape in a {image_size}px image")
    return out


def centred_origin(cell: int, side_px: int, image_size: int) -> tuple[int, int]:
    """The allowed origin whose box centre is closest to the cell's centre."""
    cx, cy = cell_centre(cell, image_size)
    xs = origins_1d(cx, side_px, image_size)
    ys = origins_1d(cy, side_px, image_size)
    x = min(xs, key=lambda v: (abs(v + side_px / 2.0 - cx), v))
    y = min(ys, key=lambda v: (abs(v + side_px / 2.0 - cy), v))
    return (x, y)


def candidate_origins(
    cell: int, side_px: int, image_size: int, jitter: float = MAX_JITTER
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Allowed ``x0`` and ``y0`` values for a box of ``side_px`` in ``cell``."""
    cx, cy = cell_centre(cell, image_size)
    return origins_1d(cx, side_px, image_size, jitter), origins_1d(cy, side_px, image_size, jitter)


def boxes_apart(a: tuple[int, int, int], b: tuple[int, int, int], gap: int = 1) -> bool:
    """Whether boxes ``(x0, y0, side)`` are separated by at least ``gap``
    empty pixels along some axis; then the shapes never touch, not even
    diagonally, so each stays its own connected blob."""
    ax, ay, asz = a
    bx, by, bsz = b
    return bx >= ax + asz + gap or ax >= bx + bsz + gap or by >= ay + asz + gap or ay >= by + bsz + gap


@lru_cache(maxsize=64)
def check_image_size(image_size: int) -> int:
    """``image_size`` if the world can be drawn at it, else a ``ValueError``.

    The world needs two large shapes in neighbouring cells, each at the
    position closest to its cell's centre, to stay at least one pixel apart
    (the fallback placement relies on it). That holds for 24 and every size
    from 26 up; below 24 shapes get too small to tell apart anyway.
    """
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size {image_size!r} is too small for the shapes world; use {MIN_IMAGE_SIZE} or more")
    s = side("large", image_size)
    xs = [centred_origin(c, s, image_size)[0] for c in range(3)]
    if any(b < a + s + 1 for a, b in zip(xs, xs[1:])):
        raise ValueError(
            f"image_size {image_size} cannot keep two large shapes in neighbouring cells apart; "
            f"use {MIN_IMAGE_SIZE} or any size from 26 up (32, 64 and 128 are the usual ones)"
        )
    return image_size


def validate_pair(text: str) -> str:
    """Normalise ``"Yellow  Triangle"`` to ``"yellow triangle"``; a
    ``ValueError`` names what is wrong and what is allowed."""
    if not isinstance(text, str):
        raise ValueError(f"a holdout pair must be a string like 'yellow triangle', got {text!r}")
    words = text.lower().split()
    if len(words) != 2:
        raise ValueError(
            f"holdout pair {text!r} must be two words, a colour then a shape, like 'yellow triangle'"
        )
    colour, shape = words
    if colour not in PALETTE:
        raise ValueError(f"holdout pair {text!r}: unknown colour {colour!r}; the colours are: {', '.join(COLOURS)}")
    if shape not in SHAPES:
        raise ValueError(f"holdout pair {text!r}: unknown shape {shape!r}; the shapes are: {', '.join(SHAPES)}")
    return f"{colour} {shape}"


def validate_holdout(pairs: Iterable[str]) -> tuple[str, ...]:
    """Normalised, de-duplicated holdout pairs (order kept); at least one pair
    must stay renderable."""
    out: list[str] = []
    for p in pairs:
        v = validate_pair(p)
        if v not in out:
            out.append(v)
    if len(out) >= len(PAIRS):
        raise ValueError("holdout lists every colour–shape pair; leave at least one pair to render")
    return tuple(out)


def allowed_pairs(holdout: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``(colour, shape)`` pairs that may be rendered, in a fixed order."""
    held = set(holdout)
    return tuple((c, s) for c in COLOURS for s in SHAPES if f"{c} {s}" not in held)


def validate_object(obj: ShapeObject) -> None:
    """A ``ValueError`` for a name outside the vocabulary or a cell off the grid."""
    if obj.colour not in PALETTE:
        raise ValueError(f"unknown colour {obj.colour!r}; the colours are: {', '.join(COLOURS)}")
    if obj.shape not in SHAPES:
        raise ValueError(f"unknown shape {obj.shape!r}; the shapes are: {', '.join(SHAPES)}")
    if obj.cell is not None and not (isinstance(obj.cell, int) and 0 <= obj.cell < 9):
        raise ValueError(f"cell {obj.cell!r} is not a grid cell; use 0..8 (row-major) or None")
    if obj.size is not None and obj.size not in SIZES:
        raise ValueError(f"unknown size {obj.size!r}; the sizes are: {', '.join(SIZES)}")
