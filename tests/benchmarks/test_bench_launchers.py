"""benchmarks/bench_launchers.py's dry run (issue 36): two tiny runs with
``local --jobs 2`` and on a two-node Ray cluster, in one run of the script; its
result files hold both launchers' wall times, the ratio and the Ray launcher's
start-up overhead, and the Ray grid used both nodes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("modiff_launcher_ray", reason="the benchmark runs the Ray launcher")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("loopback_only")]  # a Ray cluster and four tiny runs


def test_the_dry_run_measures_both_launchers_and_writes_its_results(
    benchmark_script: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    bench = benchmark_script("bench_launchers")
    assert bench.main(["--dry-run", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "dry-run.json").read_text())
    local, ray = result["local"]["grids"][0], result["ray"]["grids"][0]
    assert local["runs"] == ray["runs"] == 2 and ray["nodes"] == 2
    assert result["ray_over_local_wall"] == pytest.approx(ray["wall_seconds"] / local["wall_seconds"])
    assert all(s > 0 for s in local["start_seconds"] + ray["start_seconds"])
    overhead = result["ray"]["median_start_seconds"] - result["local"]["median_start_seconds"]
    assert result["ray_start_overhead_seconds"] == pytest.approx(overhead)
    report = (tmp_path / "dry-run.md").read_text()
    assert "Ray's wall time / local's: **" in report and "python benchmarks/bench_launchers.py --dry-run" in report
