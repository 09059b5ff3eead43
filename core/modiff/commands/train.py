"""``modiff train``: train every stage of a run, resumable."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .settings import add_settings_arguments

if TYPE_CHECKING:
    from ..runs import RunDir
    from ..settings import ResolvedSettings


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a run from settings (autoencoder, text embedder, denoiser)",
        description="Train a run. SETTINGS are settings files, or the run's own folder to resume it from wherever "
        "you stand: `modiff train runs/NAME --resume`.",
    )
    add_settings_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run of the same name first")
    p.add_argument("--nproc", type=int, default=None, metavar="N", help="train with N processes (starts torchrun)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--stage-cache",
        metavar="DIR",
        default=None,
        help="share finished stages between runs through DIR: a new run whose settings decide a stage exactly as "
        "a kept one starts from it (the same weights, its seconds counted), and this run keeps each stage it "
        "finishes there for the next",
    )
    p.set_defaults(func=run)


def target(files: list[str], sets: list[str]) -> tuple[ResolvedSettings, RunDir]:
    """The resolved settings and the run folder to train into.

    A run's own folder (or its ``settings.toml``) trains into that folder,
    wherever it lies and whatever its settings' ``runs_dir`` says, so that a
    resumed or copied run is continued where it is. Settings files train into
    ``<runs_dir>/<name>``.
    """
    from ..errors import RunError
    from ..runs import MARKER, RunDir
    from ..settings import load
    from ..workflows import run_dir_for

    if len(files) == 1:
        given = Path(files[0])
        folder = given if given.is_dir() else given.parent if given.name == "settings.toml" else None
        if folder is not None and RunDir(folder).is_run():
            return load([folder / "settings.toml"], sets), RunDir(folder)
        if given.is_dir():
            raise RunError(
                f"{given} is a folder but not a modiff run (no settings.toml beside modiff's {MARKER} marker or "
                "checkpoints); nothing in it was touched"
            )
    resolved = load(files, sets)
    return resolved, run_dir_for(resolved)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import Checkpoint
    from ..errors import ModiffError
    from ..files import check_folder
    from ..stage_cache import StageCache
    from ..workflows import check_processes, train_run

    if args.nproc is not None and args.nproc < 1:
        raise ModiffError(f"--nproc must be at least 1, not {args.nproc}")
    resolved, run_dir = target(args.files, args.sets)
    if args.stage_cache:
        check_folder(Path(args.stage_cache), "--stage-cache")
    cache = StageCache(Path(args.stage_cache)) if args.stage_cache else None
    # under torchrun WORLD_SIZE says it; before torchrun starts, --nproc does
    processes = int(os.environ.get("WORLD_SIZE") or args.nproc or 1)
    check_processes(resolved, processes)  # before torchrun starts N processes that would each refuse
    if cache is not None and not args.resume and not args.overwrite and int(os.environ.get("RANK", "0")) == 0:
        stage = cache.start(run_dir, resolved, processes)
        if stage is not None:
            args.resume = True
            print(f"{run_dir.path}: starting after the {stage} stage kept in {cache.folder}", flush=True)
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _torchrun(args)

    def keep(stage: str, checkpoint: Checkpoint) -> None:
        if cache is not None:
            cache.keep(run_dir, stage, checkpoint, resolved, processes)

    pipeline = train_run(
        resolved, run_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, on_stage_done=keep
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    from ..workflows import sample_prompts

    task = pipeline.task
    path = None
    if pipeline.components.dataset is not None:
        path = task.write_samples(pipeline, sample_prompts(pipeline), run_dir.samples / "final.png")
    where = f"; samples in {path}" if path is not None else ""
    print(f"trained {run_dir.path}{where}; " + task.usage.format(run=run_dir.path))
    return 0


def _torchrun(args: argparse.Namespace) -> int:
    """Re-run this command under torchrun with ``--nproc`` processes on this node."""
    exe = shutil.which("torchrun")
    cmd = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    cmd += ["--standalone", f"--nproc-per-node={args.nproc}", "-m", "modiff", "train", *args.files]
    for s in args.sets:
        cmd += ["--set", s]
    cmd += [
        flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--quiet", args.quiet)) if on
    ]
    if args.stage_cache:
        cmd += ["--stage-cache", args.stage_cache]
    return subprocess.call(cmd)
