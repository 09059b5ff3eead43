"""Where one-object prompts fail: accuracy by the size the prompt says and the shape it names.

    python benchmarks/one_object_by_size.py runs/recipe-levers/recipe,seed=0/evaluation.json [...]

Reads per-prompt evaluations (a run's ``evaluation.json``, which ``modiff
ablate`` writes with its final evaluation, or ``modiff evaluate RUN --json``)
and splits the one-object prompts by the size word the prompt says
(``small``, ``large``, or none) and the shape it names, pooling the files
given. A prompt without a size word may be drawn at either size; the split
shows whether the misses sit there or with the small shapes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def split(paths: list[Path]) -> dict[tuple[str, str], tuple[int, float, float]]:
    """``(size said, shape) -> (prompts, one-object accuracy, shape accuracy)``, pooled over ``paths``."""
    from modiff_datasets.shapes import parse

    cells: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for path in paths:
        per_item = json.loads(path.read_text())["per_item"]
        metrics = per_item["metrics"]
        for i, prompt in enumerate(per_item["ids"]):
            right = metrics["one_object_accuracy"][i]
            if right is None:  # a two-object prompt
                continue
            (obj,) = parse(prompt)
            cells[(obj.size or "none", obj.shape)].append((right, metrics["one_object_shape_accuracy"][i]))
    return {
        key: (len(v), sum(r for r, _ in v) / len(v), sum(s for _, s in v) / len(v)) for key, v in sorted(cells.items())
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("finals", nargs="+", type=Path, help="evaluation.json files of runs (per-prompt results)")
    args = p.parse_args(argv)
    print("| size said | shape | prompts | one object | shape |")
    print("|---|---|---|---|---|")
    for (size, shape), (n, right, shape_right) in split(args.finals).items():
        print(f"| {size} | {shape} | {n} | {right:.2f} | {shape_right:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
