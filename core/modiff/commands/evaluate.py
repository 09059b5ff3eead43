"""``modiff evaluate``: the evaluator's numbers for a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import DEVICE_HELP


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained run (prompt accuracy, IoU, ...)",
        description="Sample a trained run on its evaluator's prompts (or --prompts), score the images with the "
        "run's evaluator (or --evaluator) and print the numbers; the full result is written as JSON.",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--prompts", type=Path, default=None, help="text file (one prompt per line) or JSON list")
    p.add_argument("--evaluator", default=None, metavar="NAME", help="evaluator to use instead of the run's")
    p.add_argument("--scheduler", default=None, metavar="NAME", help="sample with another sampler")
    p.add_argument("--json", action="store_true", help="print the full JSON result")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import Pipeline
    from ..workflows import evaluate_run, format_table, read_prompts, save_evaluation

    pipeline = Pipeline.load(args.run, device=args.device, with_data=True)  # evaluators read held-out data
    if args.scheduler:
        pipeline = pipeline.with_sampler(args.scheduler)
    prompts = read_prompts(args.prompts) if args.prompts else None
    result = evaluate_run(pipeline, evaluator=args.evaluator, prompts=prompts)
    # Shown first, saved second: a run folder that cannot be written must not cost the result.
    if args.json:
        print(json.dumps(result, indent=2, default=str), flush=True)
    else:
        print(format_table(result), flush=True)
    path = save_evaluation(pipeline.run, result)  # type: ignore[arg-type]
    if not args.json:
        print(f"(full result in {path})")
    return 0
