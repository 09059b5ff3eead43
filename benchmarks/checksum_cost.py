"""What verifying weights costs `modiff generate`'s start-up (its `Pipeline.load`).

    python benchmarks/checksum_cost.py [--settings core/modiff/configs/demo.toml] [--repeats 31]

Trains the settings at a tiny budget (the models have their full size; only
the steps are few), then loads the run again and again, alternating loads
that verify every weights file (checksum of the tensor data, no NaN or
infinity: :func:`modiff.files.read_tensors`) with loads that skip those
checks (in turns, each going first every other time), and prints the median
CPU time of each and their ratio, then the CPU time of the checks alone (the
steadier number on a busy machine, where the loads' medians wander by a few
milliseconds).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "train.encoder.steps=2",
    "train.text_embedder.steps=2",
    "train.steps=2",
    "train.checkpoint_every=2",
    "data.size=64",
    "run.device=cpu",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=Path, default=ROOT / "core/modiff/configs/demo.toml")
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()
    torch.set_num_threads(1)

    import modiff.checkpoint
    from modiff.files import _refuse_non_finite, data_checksum, read_tensors
    from modiff.pipeline import Pipeline
    from modiff.settings import load
    from modiff.workflows import run_dir_for, train_run

    with tempfile.TemporaryDirectory() as tmp:
        resolved = load([args.settings], [*TINY, f"run.runs_dir={json.dumps(tmp)}"])
        run = run_dir_for(resolved)
        train_run(resolved, run, progress=False)
        size = sum(p.stat().st_size for p in run.checkpoint().components.glob("*.safetensors"))
        Pipeline.load(run.path)  # imports and caches warm

        times: dict[bool, list[float]] = {True: [], False: []}
        for repeat in range(args.repeats):
            for verify in (True, False) if repeat % 2 else (False, True):  # neither always goes first
                modiff.checkpoint.read_tensors = functools.partial(read_tensors, verify=verify)
                start = time.process_time()
                Pipeline.load(run.path)
                times[verify].append(time.process_time() - start)
        modiff.checkpoint.read_tensors = read_tensors
        files = sorted(run.checkpoint().components.glob("*.safetensors"))
        checks = []
        for _ in range(args.repeats):  # the checks alone, on the bytes and tensors a load reads
            spent = 0.0
            for path in files:
                raw = path.read_bytes()
                tensors, _ = read_tensors(path, verify=False)
                start = time.process_time()
                data_checksum(raw)
                _refuse_non_finite(path, tensors)
                spent += time.process_time() - start
            checks.append(spent)

    checked, unchecked = statistics.median(times[True]), statistics.median(times[False])
    print(f"{args.settings.name}: {size / 1e6:.1f} MB of weights, torch {torch.__version__}, 1 thread, "
          f"median of {args.repeats} loads")
    print(f"Pipeline.load verifying: {checked * 1000:.1f} ms; without: {unchecked * 1000:.1f} ms; "
          f"ratio {checked / unchecked:.3f}")
    check = statistics.median(checks)
    print(f"the checks alone: {check * 1000:.2f} ms per load, {check / unchecked:.1%} of the load without them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
