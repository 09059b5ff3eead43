"""``modiff demo``: the whole idea in one command, on a CPU, in minutes.

Trains the built-in latent text-to-image model on the shapes world (or
resumes it, if an earlier demo was interrupted), then writes a grid for
fixed prompts, a denoising trajectory, and the prompt accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path


def demo_settings_path() -> Path:
    return Path(str(resources.files("modiff") / "configs" / "demo.toml"))


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train and sample the built-in shapes-world model (minutes on a CPU)",
        description="Train the built-in shapes-world settings (modiff/configs/demo.toml) into --out, then write "
        "a sample grid, the denoising step by step, the evaluator's numbers and summary.md there. Run it "
        "again to resume an unfinished demo.",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="output directory (default ./demo)")
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="TABLE.KEY=VALUE",
        help="override a demo setting, e.g. --set train.steps=500",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..files import atomic_write_text
    from ..grids import write_grid, write_trajectory
    from ..progress import quiet
    from ..runs import RunDir
    from ..settings import load
    from ..workflows import evaluate_run, format_table, save_evaluation, train_run

    started = time.perf_counter()
    resolved = load([demo_settings_path()], args.sets)
    run_dir = RunDir(args.out)
    resume = run_dir.exists()
    if resume:
        print(f"resuming the demo in {run_dir.path}")
    pipeline = train_run(resolved, run_dir, resume=resume, progress=not args.quiet)
    trained = time.perf_counter()
    prompts = list(resolved.sample.prompts)
    with quiet(args.quiet):
        grid = write_grid(pipeline, prompts, run_dir.path / "samples.png", n=4, cols=4)
        trajectory = write_trajectory(pipeline, prompts[:4], run_dir.path / "denoising")
        result = evaluate_run(pipeline)
    seconds = run_dir.train_seconds()  # the run's, not this call's: a resumed finished demo trains nothing
    result["train_seconds"] = seconds if seconds is not None else trained - started
    result["total_seconds"] = time.perf_counter() - started
    save_evaluation(run_dir, result)
    table = format_table(result)
    atomic_write_text(
        run_dir.path / "summary.md",
        "# modiff demo\n\n"
        f"![samples](samples.png)\n\n![denoising]({trajectory[0].name})\n\n```\n{table}\n```\n",
    )
    print(table)
    print(f"\nsamples: {grid}\ndenoising: {', '.join(str(p) for p in trajectory)}")
    print(f"prompt accuracy: {json.dumps({k: result[k] for k in result if 'accuracy' in k})}")
    return 0
