"""The ``slurm`` launcher (plugins/launcher-slurm) on a real one-node Slurm cluster (conftest.py).

A grid of 4 cells x 2 seeds through Slurm ends with the same weights and
evaluation numbers as through the local launcher (``--jobs 2``); a job
cancelled with ``scancel`` mid-run is submitted again and its run ends bit
for bit as an uninterrupted one, and a preempted job (submitit's signals) is
requeued by Slurm and its run resumes the same way. The runs are the toy
components' (seconds each), so what is measured is the launcher, not training.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from modiff.ablation import read_ablation, run_ablation
from modiff.local_launcher import threads_per_job
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS
from modiff.toml_io import dumps

pytestmark = pytest.mark.slow

pytest.importorskip("submitit", reason="the slurm launcher's dependency (pip install -e plugins/launcher-slurm)")

GRID = 'seeds = [0, 1]\nshare_stages = false\n[grid]\n"denoiser.hidden" = [4, 8, 12, 16]\n'
#: The threads every run trains with under both launchers (its bits depend on them).
THREADS = threads_per_job(2)


def grid(folder: Path, body: str, steps: int = 4, checkpoint_every: int = 2, launcher: str = "") -> Path:
    """An ablation file ``grid`` over the toy run, its runs under ``folder/runs``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(folder / "runs")
    data["train"].update(steps=steps, checkpoint_every=checkpoint_every)
    (folder / "base.toml").write_text(dumps(data))
    path = folder / "grid.toml"
    path.write_text(f'base = "base.toml"\nname = "grid"\n{body}{launcher}')
    return path


def slurm_table(**extra: Any) -> str:
    options = {"name": "slurm", "cpus_per_run": THREADS, "time": 10, "partition": "debug", **extra}
    return "[launcher]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())


def ablate(path: Path, env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modiff", "ablate", str(path), "--quiet", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def tensors_digest(path: Path) -> str:
    """The digest of a weights file's tensors and metadata (its header's key order is not fixed)."""
    digest = hashlib.sha256()
    with safe_open(str(path), "pt") as weights:
        digest.update(json.dumps(weights.metadata(), sort_keys=True).encode())
        for key in sorted(weights.keys()):
            digest.update(key.encode() + weights.get_tensor(key).numpy().tobytes())
    return digest.hexdigest()


def results(runs: Path) -> dict[str, Any]:
    """Per run: the digest of every weights file and the evaluation numbers (no timings)."""
    out = {}
    for record_path in sorted(runs.glob("*/cell.json")):
        record = json.loads(record_path.read_text())
        assert record["status"] == "done", record.get("error")
        run = record_path.parent
        weights = {str(p.relative_to(run)): tensors_digest(p) for p in sorted(run.rglob("*.safetensors"))}
        assert weights, f"no weights in {run}"
        evaluation = {k: v for k, v in (record.get("evaluation") or {}).items() if "seconds" not in k}
        out[record["name"]] = {"weights": weights, "evaluation": evaluation}
    return out


def local_results(path: Path, use_registry: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The grid on the ``local`` launcher, one run after the other in this process (no start-up
    per run), with the toys of the jobs' distribution and the threads the jobs get."""
    monkeypatch.setenv("MODIFF_LOAD_PLUGINS", "fake_toys")
    use_registry(plugin_registry(entry_points=True))
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        run_ablation(read_ablation(path), progress=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(previous)
    return results(path.parent / "runs" / "grid")


@pytest.fixture
def env(slurm_cluster: Any, toy_subprocess_env: dict[str, str]) -> dict[str, str]:
    # the toys and this launcher are the plugins the driver and the jobs load
    return {**toy_subprocess_env, "MODIFF_LOAD_PLUGINS": "fake_toys,slurm",
            "SLURM_CONF": str(slurm_cluster.conf), "OMP_NUM_THREADS": str(THREADS)}


def test_a_grid_on_slurm_equals_the_local_grid_bit_for_bit_even_with_its_driver_killed(
    tmp_path: Path, env: dict[str, str], slurm_cluster: Any, use_registry: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The driver is killed once its jobs are queued; started again, it waits for the runs being
    written and takes over the jobs still queued: no run goes to Slurm twice."""
    expected = local_results(grid(tmp_path / "local", GRID), use_registry, monkeypatch)
    on_slurm = grid(tmp_path / "slurm", GRID, launcher=slurm_table())
    out = tmp_path / "slurm" / "runs" / "grid"
    driver = subprocess.Popen([sys.executable, "-m", "modiff", "ablate", str(on_slurm), "--quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((out / ".slurm" / "runs").glob("*.json"))) < len(expected):
        assert driver.poll() is None and time.monotonic() < deadline, "the driver never submitted the grid"
        time.sleep(0.2)
    driver.kill()
    driver.wait()
    submitted = {name: job_of(out, name) for name in expected}
    # the driver handed over the ready runs together: they went to Slurm as one job array
    assert len({j.split("_")[0] for j in submitted.values()}) == 1 and all("_" in j for j in submitted.values())
    again = ablate(on_slurm, env)
    said = again.stdout + again.stderr  # the launcher speaks in the driver's output (LaunchContext.log)
    assert "taken over" in said, said[-2000:]
    assert {name: job_of(out, name) for name in expected} == submitted, "a run went to Slurm twice"
    assert len(expected) == 8 and results(out) == expected
    records = [json.loads(p.read_text()) for p in out.glob("*/cell.json")]
    nodes = {r["launch"]["node"] for r in records if "launch" in r}
    assert nodes == {slurm_cluster.node}, "each record the driver wrote names the node its run ran on"


def job_of(out: Path, run: str) -> str:
    return json.loads((out / ".slurm" / "runs" / f"{run}.json").read_text())["job_id"]


def wait_for_checkpoint(run: Path, driver: subprocess.Popen[str]) -> None:
    """Until the run's first checkpoint exists (so the job is mid-run, past its start)."""
    deadline = time.monotonic() + 120
    while not (run / "LATEST").is_file():
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline, "the run never reached its first checkpoint"
        time.sleep(0.2)


def test_a_cancelled_job_is_rerun_and_a_preempted_one_requeued_both_bit_identical(
    tmp_path: Path, env: dict[str, str], slurm_cluster: Any, use_registry: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    two = 'share_stages = false\n[grid]\n"denoiser.hidden" = [4, 8]\n'
    steps = {"steps": 400, "checkpoint_every": 20}  # seconds of training: each signal lands mid-run
    expected = local_results(grid(tmp_path / "local", two, **steps), use_registry, monkeypatch)
    on_slurm = grid(tmp_path / "slurm", two, launcher=slurm_table(), **steps)
    out = tmp_path / "slurm" / "runs" / "grid"
    command = [sys.executable, "-m", "modiff", "ablate", str(on_slurm), "--quiet"]
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        cancelled, preempted = "denoiser.hidden=4", "denoiser.hidden=8"
        wait_for_checkpoint(out / cancelled, driver)
        first = job_of(out, cancelled)
        slurm_cluster.run("scancel", first)
        wait_for_checkpoint(out / preempted, driver)
        second = job_of(out, preempted)
        # preemption as submitit sees it: SIGTERM to the job, then its USR2; it requeues itself
        slurm_cluster.run("scancel", "--signal=TERM", second)
        slurm_cluster.run("scancel", "--signal=USR2", second)
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output[-3000:]
    assert f"{cancelled}: Slurm job {first} ended CANCELLED before its run finished; submitting it again" in output
    assert "submitting it again" in (out / ".logs" / f"{cancelled}.log").read_text()
    assert job_of(out, cancelled) != first, "the cancelled run went to Slurm again as a new job"
    assert job_of(out, preempted) == second, "the preempted job was requeued, not submitted again"
    assert "Restarts=1" in slurm_cluster.run("scontrol", "show", "job", second)
    assert results(out) == expected
