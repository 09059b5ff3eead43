"""Drawing scenes with numpy: hard edges, exact colours, a mask that agrees.

Each shape is a boolean stencil the size of its bounding box, decided per
pixel (no anti-aliasing), so every painted pixel carries exactly a palette
colour and the mask marks exactly the painted pixels. Stencils are cached per
shape and side, which makes rendering a copy of a few small arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .world import (
    MASK_CLASSES,
    PALETTE,
    ShapeObject,
    boxes_apart,
    centred_origin,
    check_image_size,
    side,
    validate_object,
)


@lru_cache(maxsize=256)
def stencil(shape: str, side_px: int) -> np.ndarray:
    """``[side, side]`` bool: the pixels a shape covers inside its box.

    Every stencil touches all four sides of its box, so the bounding box of
    the painted pixels is exactly ``side × side``:

    * square: every pixel.
    * circle: pixels whose centre lies within ``side / 2`` of the box centre
      (fill ratio about π/4 ≈ 0.79; 0.76 at 7 px).
    * triangle, apex up, base horizontal: row ``i`` (from the top) is a
      centred run as wide as the triangle at the row's lower edge
      (``i + 1`` pixels), rounded down to the parity of ``side`` so it stays
      centred, and at least 1 (odd side) or 2 (even side) pixels (fill ratio
      about 0.5).
    """
    if side_px < 1:
        raise ValueError(f"a shape needs a side of at least 1 pixel, got {side_px}")
    out = np.zeros((side_px, side_px), dtype=bool)
    if shape == "square":
        out[:] = True
    elif shape == "circle":
        c = (np.arange(side_px) + 0.5) - side_px / 2.0
        out = (c[:, None] ** 2 + c[None, :] ** 2) <= (side_px / 2.0) ** 2 + 1e-9
    elif shape == "triangle":
        parity = side_px % 2
        least = 1 if parity else 2
        for i in range(side_px):
            width = i + 1
            if width % 2 != parity:
                width -= 1
            width = max(width, least)
            start = (side_px - width) // 2
            out[i, start : start + width] = True
    else:
        raise ValueError(f"unknown shape {shape!r}")
    out.setflags(write=False)
    return out


def placed_box(obj: ShapeObject, image_size: int) -> tuple[int, int, int]:
    """``(x0, y0, side)`` of the object's bounding box at ``image_size``."""
    s = side(obj.size, image_size)
    if obj.origin is not None:
        x0, y0 = obj.origin
    else:
        if obj.cell is None:
            raise ValueError(f"{obj.pair} has neither a cell nor an origin; cannot place it")
        x0, y0 = centred_origin(obj.cell, s, image_size)
    return int(x0), int(y0), s


def render(objects: Sequence[ShapeObject], image_size: int, *, overlap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``objects`` on a black ``image_size`` canvas.

    Returns ``(rgb, mask)``: ``[H, W, 3]`` uint8 and ``[H, W]`` int64 with 0
    for background and 1/2/3 for circle/square/triangle. Objects without an
    ``origin`` sit at the position closest to their cell's centre. Boxes that
    leave the canvas are a ``ValueError``, and so are boxes that touch each
    other unless ``overlap``: the world never draws them, and a checker could
    not tell touching shapes apart. With ``overlap`` later objects are drawn
    over earlier ones, in the image and in the mask alike.
    """
    check_image_size(image_size)
    rgb = np.zeros((image_size, image_size, 3), dtype=np.uint8)
    mask = np.zeros((image_size, image_size), dtype=np.int64)
    boxes: list[tuple[int, int, int]] = []
    for obj in objects:
        validate_object(obj)
        box = placed_box(obj, image_size)
        x0, y0, s = box
        if x0 < 0 or y0 < 0 or x0 + s > image_size or y0 + s > image_size:
            raise ValueError(f"{obj.pair} at origin {(x0, y0)} with side {s} leaves the {image_size}px canvas")
        for other in () if overlap else boxes:
            if not boxes_apart(box, other):
                raise ValueError(f"{obj.pair} at {(x0, y0)} touches or overlaps another object")
        boxes.append(box)
        st = stencil(obj.shape, s)
        rgb[y0 : y0 + s, x0 : x0 + s][st] = PALETTE[obj.colour]
        mask[y0 : y0 + s, x0 : x0 + s][st] = MASK_CLASSES[obj.shape]
    return rgb, mask
