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
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import Pipeline
    from ..workflows import write_grid, write_trajectory

    if args.n < 1:
        raise ModiffError(f"--n must be at least 1, not {args.n}")
    if args.steps is not None and args.steps < 1:
        raise ModiffError(f"--steps must be at least 1, not {args.steps}")
    pipeline = Pipeline.load(args.run, device=args.device)
    if args.scheduler:
        pipeline = pipeline.with_sampler(args.scheduler)
    out = args.out or Path(args.run) / "samples" / "generated.png"
    kwargs = {"seed": args.seed, "steps": args.steps, "guidance": args.guidance}
    write_grid(pipeline, args.prompts, out, n=args.n, **kwargs)
    print(f"wrote {out}")
    if args.trajectory:
        for path in write_trajectory(pipeline, args.prompts, out.with_suffix(""), **kwargs):
            print(f"wrote {path}")
    return 0
