"""``modiff train``: train every stage of a run, resumable."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from .settings import add_settings_arguments


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a run from settings (autoencoder, text embedder, denoiser)")
    add_settings_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run of the same name first")
    p.add_argument("--nproc", type=int, default=None, metavar="N", help="train with N processes (starts torchrun)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..settings import load
    from ..workflows import run_dir_for, sample_prompts, train_run, write_task_grid

    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _torchrun(args)
    resolved = load(args.files, args.sets)
    run_dir = run_dir_for(resolved)
    pipeline = train_run(resolved, run_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if resolved.run.task == "segmentation":
        print(f"trained {run_dir.path}; segment images with `modiff segment {run_dir.path} IMAGE...`")
    elif pipeline.components.dataset is not None:
        path = write_task_grid(pipeline, sample_prompts(pipeline), run_dir.samples / "final.png")
        print(f"trained {run_dir.path}; samples in {path}")
    return 0


def _torchrun(args: argparse.Namespace) -> int:
    """Re-run this command under torchrun with ``--nproc`` processes on this node."""
    exe = shutil.which("torchrun")
    cmd = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--standalone", f"--nproc-per-node={args.nproc}", "-m", "modiff", "train", *args.files]
    for s in args.sets:
        cmd += ["--set", s]
    cmd += [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--quiet", args.quiet)) if on]
    return subprocess.call(cmd)
