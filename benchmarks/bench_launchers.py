"""The Ray launcher against ``local --jobs 2`` on one grid (issue 36: Ray's wall time at most 1.15x local's).

    python benchmarks/bench_launchers.py              # 4 cells x 2 seeds, short real runs; writes results/launchers/
    python benchmarks/bench_launchers.py --dry-run    # 2 tiny runs each way, into a temporary folder (a test runs it)

One run of this script trains the same grid twice, each time from nothing: with
``modiff ablate --jobs 2`` (two processes of one thread on this machine) and
with ``--launcher ray`` on a Ray cluster of two one-CPU nodes started on this
machine's loopback for the purpose (``modiff_launcher_ray.cluster``). Both
give every run one thread, so both grids end with the same bits (the test
``tests/distributed/test_ray_launcher.py`` checks that; here only the times
are kept). It measures each grid's wall time (the ``modiff ablate`` command,
start to end) and each run's start-up: from the driver handing the run to the
launcher (``cell.json``'s ``launch.submitted_at``) to the run's own start
inside its job (``started_at``, after Python, torch and modiff have loaded).
The Ray launcher's own start-up overhead per run is the difference of the
two launchers' medians. With ``--pairs N`` the two grids are trained N times,
alternating which goes first, so that the machine's load hits both alike;
the ratio is of the summed wall times. The cluster's own start (tens of
seconds) is not in Ray's wall time: a cluster outlives one grid.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "launchers"
#: Issue 36's target: Ray's wall time over local's.
TARGET = 1.15

# The tiny run of tests/tiny-run.toml with the text transformer, at a short real budget.
TEXT_EMBEDDER = '[text_embedder]\nplugin = "transformer"\nwidth = 16\nheads = 2\ndepth = 1\npretext = "layout"\n' \
    'pretext_grid = 4\n'


def write_grid(folder: Path, *, steps: int, stage_steps: int, lrs: list[str], seeds: list[int], launcher: str) -> Path:
    """The grid's base settings and ablation file under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    base = (ROOT / "tests" / "tiny-run.toml").read_text().format(
        runs=(folder / "runs").as_posix(), steps=steps, stage_steps=stage_steps, checkpoint_every=max(2, steps // 4)
    )
    (folder / "base.toml").write_text(base + TEXT_EMBEDDER)
    path = folder / "grid.toml"
    path.write_text(f'base = "base.toml"\nname = "grid"\nseeds = {seeds}\nimages_per_prompt = 1\n'
                    f'[grid]\n"train.lr" = [{", ".join(lrs)}]\n{launcher}')
    return path


def train(path: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``modiff ablate path extra...``: its wall seconds and each run's start-up seconds."""
    env = {**(env or os.environ), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "modiff", "ablate", str(path), "--quiet", *extra],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{path} {' '.join(extra)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    records = [json.loads(p.read_text()) for p in sorted((path.parent / "runs" / "grid").glob("*/cell.json"))]
    starts = [r["started_at"] - r["launch"]["submitted_at"] for r in records]
    nodes = sorted({r["launch"]["node"] for r in records})
    return {"wall_seconds": wall, "runs": len(records), "start_seconds": starts, "nodes": len(nodes)}


def measure(folder: Path, *, dry_run: bool, pairs: int) -> dict[str, Any]:
    from modiff_launcher_ray.cluster import local_cluster  # the benchmark needs the Ray launcher installed

    size = dict(steps=4, stage_steps=2, lrs=["1e-3"], seeds=[0, 1]) if dry_run else \
        dict(steps=60, stage_steps=20, lrs=["1e-3", "2e-3", "5e-4", "3e-3"], seeds=[0, 1])
    grids: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    with local_cluster(nodes=2, cpus=1) as cluster:
        for pair in range(pairs):
            order = ["local", "ray"] if pair % 2 == 0 else ["ray", "local"]
            for name in order:
                where = folder / f"{name}-{pair}"
                if name == "local":
                    grids[name].append(train(write_grid(where, launcher="", **size), "--jobs", "2"))
                else:
                    launcher = f'[launcher]\nname = "ray"\naddress = "{cluster.address}"\n'
                    grids[name].append(train(write_grid(where, launcher=launcher, **size), env=cluster.env))
    local_wall = sum(g["wall_seconds"] for g in grids["local"])
    ray_wall = sum(g["wall_seconds"] for g in grids["ray"])
    starts = {k: [s for g in v for s in g["start_seconds"]] for k, v in grids.items()}
    return {
        "grid": {"cells": len(size["lrs"]), "seeds": size["seeds"], "denoiser_steps": size["steps"],
                 "stage_steps": size["stage_steps"], "runs": len(size["lrs"]) * len(size["seeds"])},
        "pairs": pairs,
        "local": {"jobs": 2, "grids": grids["local"], "median_start_seconds": statistics.median(starts["local"])},
        "ray": {"nodes": 2, "cpus_per_node": 1, "grids": grids["ray"],
                "median_start_seconds": statistics.median(starts["ray"])},
        "ray_over_local_wall": ray_wall / local_wall,
        "target": TARGET,
        "ray_start_overhead_seconds": statistics.median(starts["ray"]) - statistics.median(starts["local"]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": list(os.getloadavg())},
        "command": "python benchmarks/bench_launchers.py" + (" --dry-run" if dry_run else "") +
                   (f" --pairs {pairs}" if pairs != 1 else ""),
    }


def markdown(result: dict[str, Any]) -> str:
    g, local, ray = result["grid"], result["local"], result["ray"]
    walls = {k: ", ".join(f"{x['wall_seconds']:.1f}" for x in v["grids"]) for k, v in (("local", local), ("ray", ray))}
    verdict = "within" if result["ray_over_local_wall"] <= result["target"] else "over"
    lines = [
        "# Launchers: Ray against local --jobs 2",
        "",
        f"`{result['command']}`: {g['runs']} runs ({g['cells']} cells x {len(g['seeds'])} seeds, "
        f"{g['denoiser_steps']} denoiser steps, {g['stage_steps']} steps per earlier stage), trained "
        f"{result['pairs']} time(s) each way on {result['machine']['cpus']} CPUs (load average at the end "
        f"{result['machine']['load_average_at_end'][0]:.1f}).",
        "",
        "| launcher | wall s (each grid) | median start-up s per run | nodes used |",
        "|---|---|---|---|",
        f"| local --jobs 2 | {walls['local']} | "
        f"{local['median_start_seconds']:.2f} | 1 |",
        f"| ray, 2 nodes x 1 CPU | {walls['ray']} | "
        f"{ray['median_start_seconds']:.2f} | {max(x['nodes'] for x in ray['grids'])} |",
        "",
        f"Ray's wall time / local's: **{result['ray_over_local_wall']:.3f}** ({verdict} the target "
        f"{result['target']}). Per run, Ray took {ray['median_start_seconds']:.2f} s from the task's submission "
        f"to the run starting in its job, local {local['median_start_seconds']:.2f} s from starting the process: "
        f"the Ray launcher's own start-up overhead is **{result['ray_start_overhead_seconds']:.2f} s**"
        + (" (below zero: no cost of its own above the noise of starting a process on this machine)."
           if result["ray_start_overhead_seconds"] < 0 else "."),
        "",
        "Start-up is measured from the driver handing a run to its launcher to the run starting inside its "
        "job (Python, torch and modiff loaded); the cluster's own start is not counted.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="2 tiny runs each way; results in a temporary folder")
    parser.add_argument("--pairs", type=int, default=1, help="times each grid is trained, alternating (default 1)")
    parser.add_argument("--out", type=Path, default=None, help=f"where to write the results (default {RESULTS})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-launchers-") as work:
        result = measure(Path(work), dry_run=args.dry_run, pairs=args.pairs)
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench-launchers-out-")) if args.dry_run else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    name = "dry-run" if args.dry_run else "ray-vs-local"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    print(f"written: {out / name}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
