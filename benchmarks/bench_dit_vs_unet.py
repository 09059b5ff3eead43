"""Diffusion Transformer (``dit``) against the UNet (``unet``) on the shapes world, equal budget.

Two cells of one ablation: the same settings in every respect except
``[denoiser] plugin`` (and that plugin's own parameters, which are its
defaults unless ``--dit-set`` / ``--unet-set`` say otherwise). Each cell is
trained from scratch with ``modiff.workflows.train_run`` (every stage: the
autoencoder and text embedder stages are deterministic, so both cells train
identical ones) and scored with ``modiff.workflows.evaluate_run`` by the
settings' evaluator, ``prompt-accuracy`` for the built-in demo settings.

It prints, per cell: denoiser parameters, seconds per denoiser training step
(from the run's metrics), total training time, evaluation time, and the
prompt accuracies (overall and per attribute); then dit / unet ratios. The
unet cell is the reference, measured in the same run.

    python benchmarks/bench_dit_vs_unet.py                       # demo settings, 1000 denoiser steps
    python benchmarks/bench_dit_vs_unet.py --steps 3000 --prompts 300
    python benchmarks/bench_dit_vs_unet.py --set train.encoder.steps=300 --dit-set depth=6 --dit-set patch_size=1
    python benchmarks/bench_dit_vs_unet.py --base my.toml --keep runs/bench

On a shared or loaded CPU, ``--threads 1`` is several times faster than
torch's default (measured here under load: unet train step 0.7 s with one
thread, 6.3 s with two; dit 0.10 s and 1.1 s).

Needs the plugins the base settings name (for the demo settings: shapes,
kl-autoencoder, clip, cross-attention, unet, ddim, prompt-accuracy) and
modiff-dit (``pip install -e contrib/dit``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import modiff
from modiff.runs import RunDir
from modiff.settings import load
from modiff.workflows import evaluate_run, train_run

DEMO = Path(modiff.__file__).parent / "configs" / "demo.toml"
ACCURACY_KEYS = (
    "accuracy",
    "colour_accuracy",
    "shape_accuracy",
    "position_accuracy",
    "count_accuracy",
    "holdout_accuracy",
)


def cell_settings(args: argparse.Namespace, plugin: str, extra: list[str], runs: Path) -> Any:
    """The resolved settings of one cell: the base file, the shared overrides, then the denoiser."""
    sets = [
        f"run.name={json.dumps(plugin)}",
        f"run.runs_dir={json.dumps(str(runs))}",
        f"train.steps={args.steps}",
        *args.sets,
        f"denoiser.plugin={json.dumps(plugin)}",
        *(f"denoiser.{s}" for s in extra),
    ]
    if args.prompts is not None:
        sets.append(f"evaluator.num_prompts={args.prompts}")
    return load([args.base], sets, environ={})


def seconds_per_step(run: RunDir) -> float | None:
    """Mean wall time of a denoiser step, from the logged steps of the run's metrics."""
    records = [m for m in run.read_metrics() if m.get("stage") == "denoiser" and "time" in m and "step" in m]
    if len(records) < 2:
        return None
    first, last = records[0], records[-1]
    return (last["time"] - first["time"]) / max(1, last["step"] - first["step"])


def run_cell(args: argparse.Namespace, plugin: str, extra: list[str], runs: Path) -> dict[str, Any]:
    resolved = cell_settings(args, plugin, extra, runs)
    run = RunDir(runs / plugin)
    print(f"[{plugin}] training ({args.steps} denoiser steps) into {run.path}", flush=True)
    t0 = time.perf_counter()
    pipeline = train_run(resolved, run, overwrite=True, progress=not args.quiet)
    train_s = time.perf_counter() - t0
    denoiser = pipeline.components.denoiser
    print(f"[{plugin}] evaluating", flush=True)
    t0 = time.perf_counter()
    result = evaluate_run(pipeline)
    eval_s = time.perf_counter() - t0
    (run.path / "evaluation.json").write_text(json.dumps(result, indent=2, default=str))
    return {
        "plugin": plugin,
        "params": sum(p.numel() for p in denoiser.parameters()),
        "s_per_step": seconds_per_step(run),
        "train_s": train_s,
        "eval_s": eval_s,
        **{k: result.get(k) for k in ACCURACY_KEYS},
        "settings": resolved.to_dict()["denoiser"],
    }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    if isinstance(value, int) and value > 10_000:
        return f"{value / 1e6:.2f}M"
    return str(value)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default=str(DEMO), help="settings file both cells start from (default: the demo settings)")
    p.add_argument("--steps", type=int, default=1000, help="denoiser training steps of each cell (default 1000)")
    p.add_argument("--prompts", type=int, default=100, help="evaluator num_prompts (default 100; 0 keeps the file's)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="TABLE.KEY=VALUE", help="for both cells")
    p.add_argument("--dit-set", action="append", default=[], metavar="KEY=VALUE", help="dit parameter")
    p.add_argument("--unet-set", action="append", default=[], metavar="KEY=VALUE", help="unet parameter")
    p.add_argument("--keep", type=Path, default=None, help="keep the runs in this folder (default: a temporary one)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args()
    if args.prompts == 0:
        args.prompts = None
    if args.threads:
        torch.set_num_threads(args.threads)

    registry = modiff.registry()
    missing = [name for name in ("dit", "unet") if name not in registry.names("denoiser")]
    if missing:
        raise SystemExit(
            f"denoiser plugin(s) {missing} not installed; `pip install -e contrib/dit` (and the unet plugin)"
        )

    runs = args.keep or Path(tempfile.mkdtemp(prefix="bench-dit-vs-unet-"))
    try:
        cells = [run_cell(args, "unet", args.unet_set, runs), run_cell(args, "dit", args.dit_set, runs)]
    finally:
        if args.keep is None:
            shutil.rmtree(runs, ignore_errors=True)

    unet, dit = cells
    print()
    print(f"shapes world, base {args.base}, {args.steps} denoiser steps each, same seed and settings but the denoiser")
    for c in cells:
        print(f"  {c['plugin']}: {json.dumps(c['settings'])}")
    keys = ["params", "s_per_step", "train_s", "eval_s", *ACCURACY_KEYS]
    width = max(len(k) for k in keys)
    print(f"\n{'':<{width}}  {'unet':>10}  {'dit':>10}  {'dit/unet':>9}")
    for k in keys:
        a, b = unet.get(k), dit.get(k)
        ratio = f"{b / a:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "-"
        print(f"{k:<{width}}  {fmt(a):>10}  {fmt(b):>10}  {ratio:>9}")


if __name__ == "__main__":
    main()
