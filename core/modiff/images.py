"""Turning tensors into pictures people look at: grids with prompts, strips, GIFs."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .errors import ModiffError
from .files import atomic_open
from .parameters import CHUNK, GenerationParameters, pnginfo


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``[B, 3, H, W]`` in [-1, 1] to RGB PIL images (clamped for display only)."""
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a), "RGB") for a in arr]


def from_pil(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """An RGB PIL image to ``[3, H, W]`` in [-1, 1], optionally resized (nearest)."""
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.NEAREST)
    arr = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return arr / 127.5 - 1


#: What the Python API takes as an image: a PIL image, or a tensor ``[3, H, W]``
#: (or ``[B, 3, H, W]``) in [-1, 1].
ImageLike = Image.Image | torch.Tensor
#: What it takes as a mask: a grey PIL image, or a tensor ``[H, W]`` (or ``[B, H, W]``).
MaskLike = Image.Image | torch.Tensor


def image_batch(images: ImageLike | Sequence[ImageLike], count: int, size: int, what: str) -> torch.Tensor:
    """``images`` as ``[count, 3, size, size]`` in [-1, 1]: PIL images are read
    (resized, nearest), tensors taken as they are; a single image serves every
    item. A :class:`ModiffError` names ``what`` for anything else."""
    stacked = _stack(images, lambda image: from_pil(image, size), 3, what)
    return _per_item(stacked, count, what)


def mask_batch(masks: MaskLike | Sequence[MaskLike], count: int, size: int, what: str) -> torch.Tensor:
    """``masks`` as integer maps ``[count, size, size]`` (a PIL image's grey
    levels, resized nearest; a tensor ``[H, W]``, ``[B, H, W]`` or
    ``[B, 1, H, W]``); a single mask serves every item."""

    def read(image: Image.Image) -> torch.Tensor:
        grey = image.convert("L")
        if grey.size != (size, size):
            grey = grey.resize((size, size), Image.NEAREST)
        return torch.from_numpy(np.asarray(grey, dtype=np.int64).copy())

    if isinstance(masks, torch.Tensor) and masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    return _per_item(_stack(masks, read, 2, what).long(), count, what)


def _stack(values: Any, read: Any, dims: int, what: str) -> torch.Tensor:
    """One tensor of ``dims + 1`` dimensions from one item or a list of items."""
    if isinstance(values, (Image.Image, torch.Tensor)):
        values = [values]
    try:
        items = [read(v) if isinstance(v, Image.Image) else v for v in values]
        batch = [v[None] if v.dim() == dims else v for v in items]
        return torch.cat([v.float() for v in batch])
    except (AttributeError, TypeError, RuntimeError) as exc:
        raise ModiffError(
            f"{what}: give a PIL image, a tensor, or a list of them with one shape ({exc})"
        ) from None


def _per_item(batch: torch.Tensor, count: int, what: str) -> torch.Tensor:
    if batch.shape[0] == 1 and count > 1:
        return batch.expand(count, *batch.shape[1:])
    if batch.shape[0] != count:
        raise ModiffError(f"got {batch.shape[0]} {what} for {count} images; give one, or one per image")
    return batch


class GeneratedImage(Image.Image):
    """A generated RGB image that carries how it was made: its ``parameters``
    (also as text in ``info["parameters"]``), written as the PNG's
    ``parameters`` chunk by :meth:`save` unless a ``pnginfo`` is given, so an
    image saved from Python says how to make it again like one from
    ``modiff generate``."""

    parameters: GenerationParameters

    @classmethod
    def of(cls, image: Image.Image, parameters: GenerationParameters) -> GeneratedImage:
        made = cls()
        made.__dict__.update(image.__dict__)
        made.info = {**image.info, CHUNK: parameters.text()}
        made.parameters = parameters
        return made

    def save(self, fp: Any, format: str | None = None, **params: Any) -> None:  # noqa: A002 (PIL's name)
        params.setdefault("pnginfo", pnginfo(self.parameters))
        super().save(fp, format, **params)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def labelled_grid(
    images: Sequence[Image.Image], labels: Sequence[str] | None = None, *, cols: int | None = None, cell: int = 128
) -> Image.Image:
    """Images in a grid, each scaled (nearest, so pixels stay visible) to ``cell``
    pixels and captioned below with its label."""
    n = len(images)
    if n == 0:
        raise ValueError("no images to put in a grid")
    cols = cols or min(n, 8)
    rows = (n + cols - 1) // cols
    wrap = max(8, cell // 6)
    label_lines = [textwrap.wrap(lbl, wrap)[:4] if lbl else [] for lbl in (labels or [""] * n)]
    text_h = 12 * max((len(lines) for lines in label_lines), default=0) + (4 if labels else 0)
    pad = 4
    grid = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + text_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = _font()
    for i, (img, lines) in enumerate(zip(images, label_lines)):
        r, c = divmod(i, cols)
        x, y = pad + c * (cell + pad), pad + r * (cell + text_h + pad)
        grid.paste(img.resize((cell, cell), Image.NEAREST), (x, y))
        for j, line in enumerate(lines):
            draw.text((x, y + cell + 2 + 12 * j), line, fill=(0, 0, 0), font=font)
    return grid


def save_png(image: Image.Image, path: Path, *, pnginfo: Any = None) -> None:
    """Write ``image`` as a PNG (atomically), with ``pnginfo`` text chunks if given."""
    with atomic_open(path) as fh:
        image.save(fh, format="PNG", pnginfo=pnginfo)


def save_gif(frames: Sequence[Image.Image], path: Path, *, cell: int = 128, ms: int = 120) -> None:
    """An animated GIF of ``frames`` (the last frame held longer)."""
    big = [f.resize((cell, cell), Image.NEAREST) for f in frames]
    durations = [ms] * (len(big) - 1) + [ms * 8]
    buffer = io.BytesIO()
    big[0].save(buffer, format="GIF", save_all=True, append_images=big[1:], duration=durations, loop=0)
    with atomic_open(path) as fh:
        fh.write(buffer.getvalue())
