"""How long `modiff generate` takes from process start to the last PNG, as a
ratio to the time Python takes to `import torch` on the same machine.

    python benchmarks/bench_generate_command.py [--repeats 5] [--python OTHER/python ...]

Trains a run with the demo's settings and a tiny budget (what loading costs
does not depend on how long the run trained), then times, taking turns so
that the machine's load hits each alike: `python -c "import torch"`, and
`modiff generate RUN "a red circle in the top left"` for one image.
Each `--python` is another interpreter (another checkout's virtual
environment, for a before/after comparison); it trains its own run with its
own code. Prints medians and each command's ratio to the import.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = [
    "train.steps=2", "train.batch_size=4", "train.encoder.steps=2", "train.encoder.batch_size=4",
    "train.text_embedder.steps=2", "train.text_embedder.batch_size=4", "data.size=64", "run.device=cpu",
]
PROMPT = "a red circle in the top left"


def demo_settings(python: str) -> str:
    code = "import modiff, pathlib; print(pathlib.Path(modiff.__file__).parent / 'configs' / 'demo.toml')"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def train(python: str, folder: Path) -> Path:
    sets = [*TINY, f'run.runs_dir="{folder}"']
    cmd = [python, "-m", "modiff", "train", demo_settings(python), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return folder / "demo"


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--python", action="append", default=[], help="another interpreter to time (before/after)")
    args = parser.parse_args()
    pythons = [sys.executable, *args.python]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {py: train(py, Path(tmp) / f"runs-{i}") for i, py in enumerate(pythons)}
        commands = {"import torch": [sys.executable, "-c", "import torch"]}
        for py in pythons:  # no --out: each call its own numbered folder (a repeat into one --out is refused)
            commands[f"generate ({py})"] = [py, "-m", "modiff", "generate", str(runs[py]), PROMPT]
        for cmd in commands.values():  # warm the file cache
            timed(cmd)
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(args.repeats):
            for key, cmd in commands.items():
                times[key].append(timed(cmd))
    base = statistics.median(times["import torch"])
    print(f"{'command':<70} {'median s':>9} {'÷ import torch':>15}")
    for key, values in times.items():
        value = statistics.median(values)
        print(f"{key:<70} {value:9.2f} {value / base:15.2f}")
    print(f"\ntarget: at most 3 s where `import torch` takes 1.4 s, a ratio of {3 / 1.4:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
