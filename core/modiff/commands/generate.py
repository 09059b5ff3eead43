"""``modiff generate``: images for prompts from a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ModiffError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate a labelled grid of images for prompts")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("prompts", nargs="+", metavar="PROMPT")
    p.add_argument("--n", type=int, default=1, help="images per prompt")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: [sample] steps)")
    p.add_argument("--scheduler", default=None, metavar="NAME", help="another sampler of the same noise schedule")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default RUN/samples/generated.png)")
    p.add_argument("--trajectory", action="store_true", help="also write the denoising step by step (PNG strip, GIF)")
    p.add_argument("--mask", type=Path, default=None, help="segmentation map PNG (class indices): mask-to-image, or with --image the region to repaint (non-zero)")
    p.add_argument("--image", type=Path, default=None, help="image to inpaint (with --mask)")
    p.add_argument("--inpaint", choices=["auto", "trained", "training-free"], default="auto", help="inpainting method")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..grids import write_grid, write_trajectory
    from ..pipeline import Pipeline

    if args.n < 1:
        raise ModiffError(f"--n must be at least 1, not {args.n}")
    if args.steps is not None and args.steps < 1:
        raise ModiffError(f"--steps must be at least 1, not {args.steps}")
    pipeline = Pipeline.load(args.run, device=args.device)
    if args.scheduler:
        pipeline = pipeline.with_sampler(args.scheduler)
    out = args.out or Path(args.run) / "samples" / "generated.png"
    kwargs = {"seed": args.seed, "steps": args.steps, "guidance": args.guidance}
    if args.mask is not None or args.image is not None:
        return _with_image(pipeline, args, out, kwargs)
    write_grid(pipeline, args.prompts, out, n=args.n, **kwargs)
    print(f"wrote {out}")
    if args.trajectory:
        for path in write_trajectory(pipeline, args.prompts, out.with_suffix(""), **kwargs):
            print(f"wrote {path}")
    return 0


def _read(path: Path, mode: str, size: int):  # type: ignore[no-untyped-def]
    from PIL import Image

    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as exc:
        raise ModiffError(f"cannot read {path}: {exc}") from None
    return image.convert(mode).resize((size, size), Image.NEAREST)


def _with_image(pipeline, args: argparse.Namespace, out: Path, kwargs: dict) -> int:  # type: ignore[no-untyped-def]
    """``--mask`` alone: mask-to-image; ``--image`` and ``--mask``: inpainting."""
    import numpy as np
    import torch

    from ..grids import colour_masks
    from ..images import from_pil, labelled_grid, save_png, to_pil
    from ..tasks import inpaint, mask_to_image

    if args.mask is None:
        raise ModiffError("--image needs --mask: the region to repaint (white/non-zero pixels)")
    size = pipeline.image_size
    mask = torch.from_numpy(np.asarray(_read(args.mask, "L", size), dtype=np.int64).copy())
    prompts = [p for p in args.prompts for _ in range(args.n)]
    if args.image is None:
        masks = mask[None].expand(len(prompts), -1, -1)
        images = mask_to_image(pipeline, prompts, masks, **kwargs)
        cells = to_pil(colour_masks(mask[None])) + to_pil(images)
        labels = ["map"] + prompts
    else:
        image = from_pil(_read(args.image, "RGB", size))[None].expand(len(prompts), -1, -1, -1)
        paint = (mask > 0).float()[None, None].expand(len(prompts), -1, -1, -1)
        images = inpaint(pipeline, prompts, image, paint, method=args.inpaint, **kwargs)
        cells = to_pil(image[:1]) + to_pil(images)
        labels = ["original"] + prompts
    save_png(labelled_grid(cells, labels), out)
    print(f"wrote {out}")
    return 0
