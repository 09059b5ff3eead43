"""A contact sheet of shapes-world examples with their captions.

``python -m modiff_datasets.preview OUT.png [--image-size 32] [--max-objects 2]
[--n 12] [--seed 0] [--scale 3]`` writes the picture used in
``docs/datasets.md``; it also shows what a run's data looks like.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .shapes import SceneSampler, render


def contact_sheet(
    *, n: int = 12, columns: int = 4, image_size: int = 32, max_objects: int = 2, seed: int = 0, scale: int = 3
) -> Image.Image:
    """Examples ``0..n-1`` upscaled ``scale`` × (nearest, so edges stay hard),
    each above its caption, on a grey sheet."""
    sampler = SceneSampler(seed=seed, image_size=image_size, max_objects=max_objects)
    font = ImageFont.load_default()
    tile = image_size * scale
    wrap = max(12, tile // 6)
    line_h = 12
    text_h = 5 * line_h
    pad = 6
    rows = -(-n // columns)
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + text_h + pad) + pad), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        scene = sampler.scene(i)
        rgb, _ = render(scene.objects, image_size)
        x = pad + (i % columns) * (tile + pad)
        y = pad + (i // columns) * (tile + text_h + pad)
        sheet.paste(Image.fromarray(rgb).resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        for k, line in enumerate(textwrap.wrap(scene.caption, wrap)[:5]):
            draw.text((x, y + tile + 2 + k * line_h), line, fill=(20, 20, 20), font=font)
    return sheet


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--columns", type=int, default=4)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--max-objects", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=3)
    a = p.parse_args(argv)
    sheet = contact_sheet(
        n=a.n, columns=a.columns, image_size=a.image_size, max_objects=a.max_objects, seed=a.seed, scale=a.scale
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out, optimize=True)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
