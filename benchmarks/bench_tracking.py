"""The cost of tracking on the demo's training step (issue 39: at most 2 %).

    python benchmarks/bench_tracking.py                  # 4 pairs of runs of 60 denoiser steps, one of 200
    python benchmarks/bench_tracking.py --pairs 6 --steps 100
    python benchmarks/bench_tracking.py --tracker mlflow   # the same for another tracker

Trains the demo's settings (``core/modiff/configs/demo.toml``) at a short
budget (2 autoencoder and 2 text-embedder steps, ``--steps`` denoiser steps,
the demo's own logging every 10 steps and batch 32, 256 shapes) in one
process, alternating runs with ``[track] plugins = ["tensorboard"]`` and runs
without, the order swapped every pair, so that changes in the machine's load
hit both alike; then one tracked run of ``--interleaved-steps`` whose
trackers are fed every other log step's record, so that windows with and
without tracking calls alternate within one run. A run's step time is the
time between its first and last denoiser records over the steps between
them, which covers every step's work and every tracker call made at a log
step (sampling and evaluation, paused out of training, are not steps), both
as wall seconds and as the process's CPU seconds (all its threads, the event
writer's included), which other processes' load on a shared machine
disturbs less. In the tracked runs the
seconds spent inside the tracking calls are also timed directly, as a share
of the steps' wall time: the same cost, without the noise of comparing runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from modiff import tracking
from modiff.runs import RunDir
from modiff.settings import load
from modiff.workflows import train_run

SETTINGS = _common.ROOT / "core" / "modiff" / "configs" / "demo.toml"


def short_budget(steps: int, runs: Path, name: str, tracker: str | None) -> list[str]:
    sets = [
        "train.encoder.steps=2",
        "train.text_embedder.steps=2",
        f"train.steps={steps}",
        "data.size=256",
        "run.device=cpu",
        f"run.runs_dir={runs.as_posix()}",
        f"run.name={name}",
    ]
    return sets + ([f'track.plugins=["{tracker}"]'] if tracker else [])


class StepClock:
    """At each denoiser record of a run (``Tracking.record`` is called for every
    ``metrics.jsonl`` record, tracked or not): the step, the wall and the process's
    CPU seconds when it arrives, and the seconds spent inside the tracking calls."""

    def __init__(self, alternate: bool = False) -> None:
        self.ticks: list[tuple[int, float, float]] = []
        self.fed: list[bool] = []  # whether each denoiser record reached the trackers
        self.in_tracking = 0.0
        self.alternate = alternate  # feed the trackers every other denoiser record only
        self.real = tracking.Tracking.record

    def __enter__(self) -> StepClock:
        clock = self

        def record(self: tracking.Tracking, rec: Any) -> None:
            if rec.get("stage") == "denoiser" and rec.get("kind") != "eval":
                clock.ticks.append((int(rec["step"]), time.perf_counter(), time.process_time()))
                clock.fed.append(not clock.alternate or len(clock.ticks) % 2 == 1)
                if not clock.fed[-1]:
                    return
            start = time.perf_counter()
            clock.real(self, rec)
            clock.in_tracking += time.perf_counter() - start if self.trackers else 0.0

        tracking.Tracking.record = record  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        tracking.Tracking.record = self.real  # type: ignore[method-assign]

    def per_step(self) -> tuple[float, float]:
        """Wall and CPU seconds per step between the first denoiser record and the last."""
        (s0, w0, c0), (s1, w1, c1) = self.ticks[0], self.ticks[-1]
        return (w1 - w0) / (s1 - s0), (c1 - c0) / (s1 - s0)


    def windows(self) -> dict[bool, list[float]]:
        """CPU seconds per step of each window between two records, by whether
        the record opening it (whose tracking calls the window holds) was fed."""
        out: dict[bool, list[float]] = {True: [], False: []}
        for (s0, _, c0), (s1, _, c1), fed in zip(self.ticks, self.ticks[1:], self.fed):
            out[fed].append((c1 - c0) / (s1 - s0))
        return out


def resolved_log_every() -> int:
    return load([SETTINGS]).train.log_every


def interleaved(steps: int, runs: Path, tracker: str) -> dict[bool, list[float]]:
    """One tracked run whose trackers get every other log step's record: its
    windows with and without tracking calls, under the same load."""
    resolved = load([SETTINGS], short_budget(steps, runs, "interleaved", tracker))
    with StepClock(alternate=True) as clock:
        train_run(resolved, RunDir(runs / "interleaved"), progress=False)
    return clock.windows()


def one_run(steps: int, runs: Path, name: str, tracker: str | None) -> dict[str, float]:
    resolved = load([SETTINGS], short_budget(steps, runs, name, tracker))
    with StepClock() as clock:
        train_run(resolved, RunDir(runs / name), progress=False)
    wall, cpu = clock.per_step()
    stepped = clock.ticks[-1][0] - clock.ticks[0][0]
    return {"wall": wall, "cpu": cpu, "in_tracking": clock.in_tracking / (wall * stepped)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4, help="tracked/untracked pairs of runs")
    parser.add_argument("--steps", type=int, default=60, help="denoiser steps per run")
    parser.add_argument("--interleaved-steps", type=int, default=200,
                        help="denoiser steps of the run whose log steps alternate tracked and untracked (0: none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--tracker", default="tensorboard", help="the tracker measured (tensorboard, mlflow)")
    args = _common.parse_args(parser)
    results: dict[str, list[dict[str, float]]] = {"untracked": [], args.tracker: []}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        for pair in range(args.pairs):
            order = [False, True] if pair % 2 == 0 else [True, False]
            for tracked in order:
                key = args.tracker if tracked else "untracked"
                got = one_run(args.steps, runs, f"{key}-{pair}", args.tracker if tracked else None)
                results[key].append(got)
                per_step = f"{1000 * got['cpu']:.1f} ms CPU, {1000 * got['wall']:.1f} ms wall per step"
                print(f"pair {pair} {key:<11} {per_step}", file=sys.stderr, flush=True)
        split = interleaved(args.interleaved_steps, runs, args.tracker) if args.interleaved_steps else None
    rows = []
    for measure in ("cpu", "wall"):
        plain = [r[measure] for r in results["untracked"]]
        tracked = [r[measure] for r in results[args.tracker]]
        paired = ", ".join(f"{t / p:.3f}" for t, p in zip(tracked, plain))
        rows.append([f"{measure} seconds", f"{1000 * statistics.median(plain):.1f}",
                     f"{1000 * statistics.median(tracked):.1f}",
                     f"{statistics.median(tracked) / statistics.median(plain):.3f} (pairs: {paired})"])
    share = [r["in_tracking"] for r in results[args.tracker]]
    print(f"demo's denoiser step, {args.steps} steps per run, {args.pairs} pairs; {_common.machine()}")
    runs_share = ", ".join(f"{100 * x:.3f} %" for x in share)
    print(f"time inside the tracking calls, share of the tracked runs' step time: "
          f"median {100 * statistics.median(share):.3f} % (runs: {runs_share})")
    if split:
        on, off = statistics.median(split[True]), statistics.median(split[False])
        rows.append([f"cpu seconds, one run, {len(split[False])} + {len(split[True])} windows of "
                     f"{resolved_log_every()} steps alternating", f"{1000 * off:.1f}", f"{1000 * on:.1f}",
                     f"{on / off:.3f}"])
    header = ["per step", "untracked (ms, median)", f"{args.tracker} (ms, median)", "tracked / untracked"]
    print(_common.markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
