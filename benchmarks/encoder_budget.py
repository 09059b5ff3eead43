"""How many autoencoder steps the shapes world needs: does the encoder stage
keep every palette colour (and every shape) after 300, 500, ... steps?

    python benchmarks/encoder_budget.py --settings configs/demo-baseline.toml \\
        --checkpoints 200,300,400,500,750,1000 --out benchmarks/results/encoder_budget.json

Trains the run's autoencoder with the core's own encoder stage (the trainer's
step, :class:`modiff.step_timing.CellSteps`: its optimiser, learning-rate
schedule with ``final_lr``, clipping, batch order and size) and, at each checkpoint, reconstructs
images the training never drew (indices past the epoch) and reads them with the
prompt-accuracy checker: a reconstruction is right when the checker finds every
object of the caption with its colour, shape and cell and nothing else. Also
reported: per-colour accuracy and the mean absolute RGB error on painted pixels.

The learning-rate schedule depends on the stage's total steps, so one stage of
the largest budget is read at each checkpoint (an upper bound on what a shorter
stage loses).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def evaluate(enc: torch.nn.Module, ds: object, first: int, n: int) -> dict[str, object]:
    from modiff_datasets.evaluation.check import check_image
    from modiff_datasets.shapes.captions import parse
    from modiff_datasets.shapes.world import COLOURS

    enc.eval()
    right, per_colour, err = [], {c: [] for c in COLOURS}, []
    from modiff_datasets.shapes.drawing import render

    with torch.no_grad():
        for start in range(first, first + n, 50):
            scenes = [ds.sampler.scene(i) for i in range(start, min(start + 50, first + n))]
            truth = np.stack([render(sc.objects, ds.image_size)[0] for sc in scenes])
            images = torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 127.5 - 1
            rec = enc(images)  # through the posterior mean, as the denoiser sees it
            rgb = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            for sc, img, tru in zip(scenes, rgb, truth):
                objects = parse(sc.caption)
                ok = check_image(img, objects).correct
                right.append(ok)
                for o in objects:
                    per_colour[o.colour].append(ok)
                painted = tru.max(-1) > 0
                err.append(float(np.abs(img[painted].astype(int) - tru[painted].astype(int)).mean()))
    enc.train()
    return {
        "accuracy": float(np.mean(right)),
        "per_colour": {c: (float(np.mean(v)) if v else None) for c, v in per_colour.items()},
        "painted_mae": float(np.mean(err)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default="configs/demo-baseline.toml")
    p.add_argument("--set", dest="sets", action="append", default=[])
    p.add_argument("--checkpoints", default="200,300,400,500,750,1000")
    p.add_argument("--images", type=int, default=400, help="reconstructions checked per checkpoint")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    import modiff
    from modiff.step_timing import CellSteps

    checkpoints = sorted(int(x) for x in args.checkpoints.split(","))
    resolved = modiff.load_settings_files(
        [ROOT / args.settings], [*args.sets, f"train.encoder.steps={checkpoints[-1]}"]
    )
    scratch = tempfile.TemporaryDirectory(prefix="encoder-budget-")
    cell = CellSteps(resolved, Path(scratch.name))  # the trainer's own stage: nothing is committed there
    update = cell.set_up("encoder")
    if update is None:
        raise SystemExit(f"{args.settings}: the encoder has no stage to train")
    enc, ds = cell.components.encoder, cell.components.dataset
    results, t0 = [], time.perf_counter()
    for step in range(checkpoints[-1]):
        loss = update(step)
        if step + 1 in checkpoints:
            r = {"step": step + 1, "loss": float(loss.detach()), "seconds": time.perf_counter() - t0,
                 **evaluate(enc, ds, len(ds), args.images)}
            enc.train()  # evaluate() switched it to eval mode; the stage trains on
            results.append(r)
            print(json.dumps(r), flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.out.with_name(f".{args.out.name}.tmp")
                tmp.write_text(json.dumps({"settings": args.settings, "sets": args.sets, "results": results}, indent=1))
                tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
