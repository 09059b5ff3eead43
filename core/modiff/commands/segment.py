"""``modiff segment``: class maps for images from a segmentation run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ModiffError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment images with a run trained with task = \"segmentation\"")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--out", type=Path, default=Path("segmented"), help="output directory (default ./segmented)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from ..grids import colour_masks
    from ..images import from_pil, save_png, to_pil
    from ..pipeline import Pipeline
    from ..tasks import segment

    pipeline = Pipeline.load(args.run, device=args.device)
    size = pipeline.image_size
    for path in args.images:
        try:
            original = Image.open(path).convert("RGB")
        except (OSError, ValueError) as exc:
            raise ModiffError(f"cannot read image {path}: {exc}") from None
        image = from_pil(original, size)[None]
        mask = segment(pipeline, image)
        overlay = (0.5 * image + 0.5 * colour_masks(mask)).clamp(-1, 1)
        out = args.out / f"{path.stem}-segmented.png"
        save_png(to_pil(overlay)[0].resize(original.size, Image.NEAREST), out)
        classes = sorted(int(c) for c in torch.unique(mask))
        save_png(Image.fromarray(mask[0].numpy().astype(np.uint8), "L"), args.out / f"{path.stem}-mask.png")
        print(f"{path}: classes {classes} -> {out}")
    return 0
