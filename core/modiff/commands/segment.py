"""``modiff segment``: class maps for images from a segmentation run.

A name for ``modiff generate RUN --image IMAGE`` on a segmentation run, one
image after another: the same generation and the same writers
(``IMAGE-segmented.png``, the image with its class map over it, and
``IMAGE-mask.png``, one grey level per class index).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import DEVICE_HELP


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images with a run trained with task = \"segmentation\"",
        description="Write a class map for each IMAGE, made by a run trained with [run] task = "
        "\"segmentation\", into --out.",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image file(s) to segment")
    p.add_argument("--out", type=Path, default=Path("segmented"), help="output directory (default ./segmented)")
    p.add_argument("--overwrite", action="store_true", help="replace maps in --out that exist already")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import Pipeline
    from .generate import generate_files

    pipeline = Pipeline.load(args.run, device=args.device)
    for path in args.images:
        generate_files(pipeline, {"image": path}, out=args.out, grid=False, overwrite=args.overwrite)
    return 0
