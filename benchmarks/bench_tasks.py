"""The UNet's origin and the flexible context, measured on the shapes world.

    python benchmarks/bench_tasks.py [--steps N] [--out DIR]

Trains three runs from `configs/` (segmentation, mask-to-image, inpainting)
with the same budget and reports:

* segmentation: mean IoU (and per class) on held-out images (`iou` evaluator);
* mask-to-image: IoU between the objects found in generated images (pixels
  brighter than the black background) and the foreground of the input map;
* inpainting: for a centre square repainted with a prompt naming one object
  there, the fraction whose repainted region holds that object's colour, and
  the largest change outside the region (0 by construction).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def train(config: str, out: Path, steps: int):
    from modiff.pipeline import Pipeline
    from modiff.runs import RunDir
    from modiff.settings import load
    from modiff.workflows import train_run

    sets = [f"train.steps={steps}", f"run.runs_dir={json.dumps(str(out))}"]
    resolved = load([ROOT / "configs" / config], sets)
    run = RunDir(out / resolved.run.name)
    t0 = time.perf_counter()
    train_run(resolved, run, resume=run.exists(), progress=False)
    return Pipeline.load(run.path), time.perf_counter() - t0


def foreground_iou(images: torch.Tensor, masks: torch.Tensor) -> float:
    found = images.max(1).values > -0.5
    truth = masks > 0
    return float((found & truth).sum()) / max(1, int((found | truth).sum()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench-tasks"))
    args = parser.parse_args()
    from modiff.workflows import evaluate_run

    rows = []
    seg, seconds = train("segmentation.toml", args.out, args.steps)
    result = evaluate_run(seg)
    rows.append(("segmentation mean IoU (held out)", result["mean_iou"], seconds))
    print(json.dumps(result, indent=1))

    m2i, seconds = train("mask-to-image.toml", args.out, args.steps)
    ds = m2i.components.dataset
    held = type(ds)(ds.settings.model_copy(update={"seed": ds.settings.seed + 1000}))
    examples = [held[i] for i in range(args.images)]
    masks = torch.stack([e.mask for e in examples])
    made = m2i.mask_to_image([e.caption for e in examples], masks, seed=0)
    rows.append(("mask-to-image foreground IoU", foreground_iou(made, masks), seconds))

    inp, seconds = train("inpainting.toml", args.out, args.steps)
    from modiff_datasets.evaluation.check import check_image  # noqa: F401 - documents the checker used below
    colours = {"red": (230, 40, 40), "blue": (50, 90, 240), "green": (40, 200, 60)}
    images = torch.full((args.images, 3, 32, 32), -1.0)
    paint = torch.zeros(args.images, 1, 32, 32)
    paint[:, :, 8:24, 8:24] = 1
    names = [list(colours)[i % 3] for i in range(args.images)]
    out = inp.inpaint([f"a large {n} square in the center" for n in names], images, paint, seed=0)
    hits = 0
    for img, name in zip(out, names):
        region = ((img[:, 8:24, 8:24] + 1) * 127.5).reshape(3, -1)
        bright = region[:, region.max(0).values > 60]
        if bright.shape[1] > 10:
            mean = bright.mean(1)
            best = min(colours, key=lambda c: float(((mean - torch.tensor(colours[c])) ** 2).sum()))
            hits += best == name
    change = float(((out - images).abs() * (1 - paint)).max())
    rows.append(("inpainting colour correct in region", hits / len(names), seconds))
    rows.append(("inpainting max change outside region", change, 0.0))

    print(f"\n{'measure':<40} {'value':>8} {'train s':>8}")
    for name, value, secs in rows:
        print(f"{name:<40} {value:>8.3f} {secs:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
