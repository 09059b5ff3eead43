"""The sampler, its step count and the guidance scale, on one trained run.

    python benchmarks/sampler_sweep.py RUN --samplers ddim:25,unipc:10,dpmpp-2m:10,unipc:8 \\
        --guidance 3,5 --prompts 300 --seed 0 --json benchmarks/results/samplers.json

Sampling needs no retraining: every sampler of the run's noise schedule can
sample its model (``Pipeline.with_sampler``). Each combination is scored by the
prompt-accuracy evaluator on the same prompts and noise (``--prompts``,
``--seed``: the evaluator's own list, half two-object). Reported per
combination: one-object, two-object and held-out-pair accuracy, the number of
denoiser evaluations per image (steps, doubled by guidance; a load-free cost)
and the seconds the evaluation took (noisy on a loaded machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a trained run directory")
    p.add_argument("--samplers", default="ddim:25,unipc:10,dpmpp-2m:10", help="NAME:STEPS,... (comma-separated)")
    p.add_argument("--guidance", default="3", help="guidance scales, comma-separated")
    p.add_argument("--prompts", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from modiff.pipeline import Pipeline

    base = Pipeline.load(args.run, device="cpu")
    evaluator = base.components.evaluator
    if evaluator is None or not hasattr(evaluator, "settings"):
        print(f"{args.run} has no prompt-accuracy evaluator")
        return 2
    rows = []
    for spec in args.samplers.split(","):
        name, _, steps = spec.partition(":")
        pipeline = base.with_sampler(name)
        for guidance in (float(g) for g in args.guidance.split(",")):
            evaluator.settings = evaluator.settings.model_copy(
                update={"num_prompts": args.prompts, "seed": args.seed, "steps": int(steps), "guidance": guidance}
            )
            t0 = time.perf_counter()
            result = evaluator.evaluate(pipeline)
            seconds = time.perf_counter() - t0
            row = {"sampler": name, "steps": int(steps), "guidance": guidance, "seconds": seconds,
                   "denoiser_evaluations": int(steps) * (2 if guidance != 1.0 else 1),
                   **{k: result[k] for k in ("accuracy", "one_object_accuracy", "two_object_accuracy",
                                             "holdout_accuracy", "num_prompts", "num_holdout")}}
            rows.append(row)
            print(f"{name:>10} {int(steps):>3} steps  guidance {guidance:<4} one {row['one_object_accuracy']:.3f}  "
                  f"two {row['two_object_accuracy']:.3f}  held-out {row['holdout_accuracy']:.3f}  "
                  f"({row['denoiser_evaluations']} evaluations/image, {seconds:.0f} s)", flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.json.with_name(f".{args.json.name}.tmp")
                tmp.write_text(json.dumps({"run": args.run, "rows": rows}, indent=1))
                tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
