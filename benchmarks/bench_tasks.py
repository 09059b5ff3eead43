"""The UNet's origin and the flexible context, measured on the shapes world.

    python benchmarks/bench_tasks.py [--steps N] [--out DIR]

Trains three runs from `configs/` (segmentation, mask-to-image, inpainting)
with the same budget and reports:

* segmentation: mean IoU (and per class) on held-out images (`iou` evaluator);
* mask-to-image: IoU between the objects found in generated images (pixels
  brighter than the black background) and the foreground of the input map;
* inpainting: a blank canvas with one grid cell to repaint and a prompt
  naming one object in that cell: the prompt accuracy of the result (the
  prompt-accuracy evaluator's own checker: colour, shape, cell, count) and the
  largest change outside the region; for the run trained in the SD layout,
  and with ``--text-to-image-run`` also training-free on that run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from modiff.tasks import inpaint, mask_to_image

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
    return Pipeline.load(run.path, with_data=True), time.perf_counter() - t0  # evaluation reads held-out data


def foreground_iou(images: torch.Tensor, masks: torch.Tensor) -> float:
    found = images.max(1).values > -0.5
    truth = masks > 0
    return float((found & truth).sum()) / max(1, int((found | truth).sum()))


def inpainting_cases(n: int, image_size: int = 32) -> tuple[list[str], torch.Tensor]:
    """``n`` prompts naming one object in one cell, and a paint mask over that
    cell (a margin of 2 pixels around it): a blank canvas is to be repainted
    with exactly what the prompt says, where it says it."""
    from modiff_datasets.shapes.world import CELLS, COLOURS, SHAPES

    g = torch.Generator().manual_seed(7)
    prompts, paint = [], torch.zeros(n, 1, image_size, image_size)
    cell_px = image_size / 3
    for i in range(n):
        colour, shape, cell = (int(torch.randint(k, (1,), generator=g)) for k in (len(COLOURS), len(SHAPES), 9))
        prompts.append(f"a {COLOURS[colour]} {SHAPES[shape]} in the {CELLS[cell]}")
        row, col = divmod(cell, 3)
        y0, x0 = max(0, int(row * cell_px) - 2), max(0, int(col * cell_px) - 2)
        y1, x1 = min(image_size, int((row + 1) * cell_px) + 2), min(image_size, int((col + 1) * cell_px) + 2)
        paint[i, :, y0:y1, x0:x1] = 1
    return prompts, paint


def inpainting_rows(pipeline, label: str, n: int, seconds: float) -> list[tuple[str, float, float]]:
    """Prompt accuracy (the evaluator's own checker) of the repainted canvas,
    and the largest change outside the paint mask."""
    import numpy as np

    from modiff_datasets.evaluation.check import check_image
    from modiff_datasets.evaluation.prompt_accuracy import cases_from_prompts

    size = pipeline.image_size
    prompts, paint = inpainting_cases(n, size)
    canvas = torch.full((n, 3, size, size), -1.0)
    out = inpaint(pipeline, prompts, canvas, paint, seed=0)
    pixels = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    results = [
        check_image(np.ascontiguousarray(img), case.objects)
        for img, case in zip(pixels, cases_from_prompts(prompts, []))
    ]
    change = float(((out - canvas).abs() * (1 - paint)).max())
    return [
        (f"inpainting {label}: prompt accuracy in region", sum(r.correct for r in results) / n, seconds),
        (f"inpainting {label}: colour correct in region", sum(r.colour for r in results) / n, seconds),
        (f"inpainting {label}: max change outside region", change, 0.0),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench-tasks"))
    parser.add_argument(
        "--text-to-image-run", type=Path, default=None,
        help="also inpaint training-free with this text-to-image run (e.g. the demo's)",
    )
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
    made = mask_to_image(m2i, [e.caption for e in examples], masks, seed=0)
    rows.append(("mask-to-image foreground IoU", foreground_iou(made, masks), seconds))

    inp, seconds = train("inpainting.toml", args.out, args.steps)
    rows += inpainting_rows(inp, "trained (SD layout)", args.images, seconds)
    if args.text_to_image_run is not None:
        from modiff.pipeline import Pipeline

        rows += inpainting_rows(Pipeline.load(args.text_to_image_run), "training-free", args.images, 0.0)

    print(f"\n{'measure':<40} {'value':>8} {'train s':>8}")
    for name, value, secs in rows:
        print(f"{name:<40} {value:>8.3f} {secs:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
