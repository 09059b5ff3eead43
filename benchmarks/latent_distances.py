"""How far apart the autoencoder puts what the prompt names: shape against colour.

    python benchmarks/latent_distances.py RUN [--json benchmarks/results/recipe/latent-distances.json]

The denoiser's loss is a squared error in the latent space, so what the
autoencoder puts close together is what the denoiser tells apart last. For
every palette colour and every one of the nine cells, at each size, this
renders the same object as a circle, a square and a triangle, and as a circle
of the next palette colour, encodes each (the posterior mean, normalised as the
denoiser sees it) and reports the mean Euclidean distance between the latents
of circle and square, circle and triangle, and two colours of the same circle.
Deterministic: no noise is drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a trained run directory with a shapes-world autoencoder")
    p.add_argument("--json", type=Path, default=None, help="also write the table here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from modiff.pipeline import Pipeline
    from modiff_datasets.shapes.drawing import render
    from modiff_datasets.shapes.world import COLOURS, SIZES, ShapeObject

    pipeline = Pipeline.load(args.run, device="cpu")
    encoder = pipeline.components.encoder
    with open(Path(args.run) / "settings.toml", "rb") as f:
        image_size = int(tomllib.load(f).get("data", {}).get("image_size", 32))

    def latent(colour: str, shape: str, cell: int, size: str) -> torch.Tensor:
        rgb, _ = render([ShapeObject(colour, shape, cell, size)], image_size)
        x = torch.from_numpy(rgb).permute(2, 0, 1).float()[None] / 127.5 - 1
        with torch.no_grad():
            return encoder.encode(x, sample=False)[0]

    rows = []
    for size in SIZES:
        pairs: dict[str, list[float]] = {"circle-square": [], "circle-triangle": [], "colour": []}
        for i, colour in enumerate(COLOURS):
            other = COLOURS[(i + 1) % len(COLOURS)]
            for cell in range(9):
                circle = latent(colour, "circle", cell, size)
                pairs["circle-square"].append(float((circle - latent(colour, "square", cell, size)).norm()))
                pairs["circle-triangle"].append(float((circle - latent(colour, "triangle", cell, size)).norm()))
                pairs["colour"].append(float((circle - latent(other, "circle", cell, size)).norm()))
        row = {"size": size, **{k: float(np.mean(v)) for k, v in pairs.items()}, "pairs": len(pairs["colour"])}
        rows.append(row)
        print(f"{size:>6}: circle-square {row['circle-square']:.2f}  circle-triangle {row['circle-triangle']:.2f}  "
              f"colour change {row['colour']:.2f}  ({row['pairs']} pairs)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps({"run": str(args.run), "rows": rows}, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
