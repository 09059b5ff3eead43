"""Time `modiff demo` end to end and print its prompt accuracy.

    python benchmarks/demo.py [--out DIR] [--set train.steps=...]

Runs the demo exactly as a new user would (a fresh output directory), then
prints the wall time, the training time and the accuracy figures the demo's
evaluator wrote (overall, per attribute, one- and two-object, held-out pairs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-demo"))
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    cmd = [sys.executable, "-m", "modiff", "demo", "--out", str(args.out), "--quiet"]
    for s in args.sets:
        cmd += ["--set", s]
    started = time.perf_counter()
    result = subprocess.run(cmd)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        print(f"modiff demo failed with exit code {result.returncode}")
        return result.returncode
    ev = json.loads((args.out / "evaluation.json").read_text())
    print(f"\nwall time {wall:.0f} s (target 600 s); training {ev.get('train_seconds', 0):.0f} s")
    for key in ("accuracy", "one_object_accuracy", "two_object_accuracy", "holdout_accuracy",
                "colour_accuracy", "shape_accuracy", "position_accuracy", "count_accuracy", "num_prompts"):
        if key in ev:
            print(f"{key:<22} {ev[key]}")
    print("targets: one-object >= 0.9, two-object >= 0.5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
