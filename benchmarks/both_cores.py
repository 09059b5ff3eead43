"""Both cores for one training run: one process with two threads, or two
processes with one thread each (``modiff train --nproc 2``, gloo), against one
process with one thread, at the same global batch.

    python benchmarks/both_cores.py [--settings core/modiff/configs/demo.toml] [--steps 60] [--rounds 3]

Each configuration is a real ``modiff train`` of the settings, cut to a short
denoiser stage (the encoder and text stages cut to one step), and its speed
is the denoiser's steps per second as the run logs them, after the first
logged window (start-up). The configurations take turns, round after round, so
a change in the machine's load hits each of them alike; the medians and the
speed-ups over one thread are printed. The models are the same in all three
(the core's draws do not depend on the number of processes or threads), so
speed is the whole difference.

On a machine shared with other work, extra threads are worth little or
nothing: a thread that waits for the others at every operation waits for the
busiest core. Measure on a quiet machine for the number a user gets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "1 process x 1 thread": {"threads": 1, "nproc": 1},
    "1 process x 2 threads": {"threads": 2, "nproc": 1},
    "2 processes x 1 thread": {"threads": 1, "nproc": 2},
}


def speed(settings: Path, config: dict[str, int], steps: int, out: Path, name: str) -> float | None:
    """Denoiser steps per second of one short run (median over its logged windows after the first)."""
    sets = [
        f'run.name="{name}"', f'run.runs_dir="{out}"', 'run.device="cpu"', f"train.steps={steps}",
        "train.log_every=10", f"train.checkpoint_every={steps}", "train.eval_every=0", "train.encoder.steps=1",
        "train.text_embedder.steps=1", "sample.steps=1",
    ]
    boot = ("import sys, torch; torch.set_num_threads(int(sys.argv.pop(1))); "
            "from modiff.cli import main; sys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", boot, str(config["threads"]), "train", str(settings), "--quiet", "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    if config["nproc"] > 1:
        cmd += ["--nproc", str(config["nproc"])]
    env = {**os.environ, "OMP_NUM_THREADS": str(config["threads"])}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
        return None
    rates = []
    for line in (out / name / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("stage") == "denoiser" and "steps_per_s" in rec:
            rates.append(rec["steps_per_s"])
    return statistics.median(rates[1:]) if len(rates) > 1 else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", type=Path, default=ROOT / "core" / "modiff" / "configs" / "demo.toml")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    rates: dict[str, list[float]] = {k: [] for k in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for label, config in CONFIGS.items():
                v = speed(args.settings, config, args.steps, Path(tmp), f"c{config['threads']}{config['nproc']}")
                if v is not None:
                    rates[label].append(v)
                print(f"round {r + 1}: {label}: {v if v is None else f'{v:.2f} steps/s'}", flush=True)
    base = statistics.median(rates["1 process x 1 thread"]) if rates["1 process x 1 thread"] else None
    summary = {}
    for label, vs in rates.items():
        if vs:
            m = statistics.median(vs)
            summary[label] = {"steps_per_s": m, "speedup": m / base if base else None, "runs": vs}
            print(f"{label:<24} {m:.2f} steps/s" + (f"  {m / base:.2f}x one thread" if base else ""))
    try:
        load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        load = ""
    print(f"uptime: {load}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": str(args.settings), "steps": args.steps, "summary": summary,
                                         "uptime": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
