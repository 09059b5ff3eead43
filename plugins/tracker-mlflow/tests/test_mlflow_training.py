"""Toy runs tracked in MLflow, read back with MLflow's own client.

Against the local SQLite store in the runs folder (the default) and, in a slow
test, against a real ``mlflow server`` process on loopback: the run's
parameters, every metric of ``metrics.jsonl`` at its run-wide step, the
sample images and the result files. A run SIGKILLed between two checkpoints
and resumed keeps one MLflow run whose series are strictly increasing, with
no duplicate and no gap; a server that is down costs one warning; an
ablation grid is one experiment whose runs carry their variant and seed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modiff.cli import main
from modiff.runs import RunDir
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps
from modiff.tracking import STATE_KEY, TrackerWarning
from modiff_mlflow.server import free_port, running_server

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def toys(use_registry, monkeypatch: pytest.MonkeyPatch) -> None:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def settings(tmp_path: Path, name: str, mlflow_options: dict[str, Any] | None = None, **train: Any) -> Path:
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"].update(name=name, runs_dir=str(tmp_path / "runs"))
    data["encoder"]["trainable"] = True  # a stage before the denoiser's: its steps come first
    data["train"].update(train)
    data["track"] = {"plugins": ["mlflow"], **({"mlflow": mlflow_options} if mlflow_options else {})}
    path = tmp_path / f"{name}.toml"
    path.write_text(dumps(data))
    return path


def local_client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}")


def expected_series(run: Path) -> dict[str, dict[int, float]]:
    """metrics.jsonl as MLflow should hold it: name -> {run-wide step: value}."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    offsets: dict[str, int] = {}
    ends: dict[str, int] = {}
    for r in records:
        offsets.setdefault(r["stage"], sum(ends.values()))
        ends[r["stage"]] = max(ends.get(r["stage"], 0), r["step"])
    series: dict[str, dict[int, float]] = {}
    for r in records:
        at = offsets[r["stage"]] + r["step"]
        if r.get("kind") == "eval":
            values = {f"eval/{k}": v for k, v in r["eval"].items()}
        else:
            values = {f"{r['stage']}/{k}": r[k] for k in ("loss", "lr", "steps_per_s")}
        for key, value in values.items():
            series.setdefault(key, {})[at] = value
    return series


def check_series(client: MlflowClient, run_id: str, run: Path) -> None:
    """Every metric of metrics.jsonl, at its steps, each step once, in order."""
    expected = expected_series(run)
    for key, points in expected.items():
        history = client.get_metric_history(run_id, key)
        steps = [m.step for m in history]
        assert steps == sorted(points), f"{key}: MLflow holds steps {steps}, metrics.jsonl {sorted(points)}"
        if "seconds" not in key and not key.endswith("per_s"):  # times are not reproducible; the numbers are
            assert [m.value for m in history] == pytest.approx([points[s] for s in steps]), key
    held = set(client.get_run(run_id).data.metrics)
    assert held >= set(expected) and any(k.startswith("eval/") for k in held), held


def check_run(client: MlflowClient, run_id: str, run: Path) -> None:
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == run.name
    params = tracked.data.params
    assert params["run.name"] == run.name and params["denoiser.plugin"] == "toy"
    assert float(params["train.lr"]) == TOY_SETTINGS["train"].get("lr", 2e-4)
    check_series(client, run_id, run)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"settings.toml", "metrics.jsonl"} <= artifacts, artifacts
    local = Path(client.download_artifacts(run_id, "settings.toml", str(run.parent.parent / "download")))
    assert local.read_text() == (run / "settings.toml").read_text()
    images = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    assert {p.split("/")[1].split("+")[0] for p in images} == {"samples", "trajectory"}, images


def test_a_run_in_the_local_store_reads_back_with_mlflows_client(tmp_path: Path) -> None:
    assert main(["train", str(settings(tmp_path, "tracked", eval_every=2, sample_every=2)), "--quiet"]) == 0
    run = tmp_path / "runs" / "tracked"
    run_id = RunDir(run).latest().state[STATE_KEY]["mlflow"]
    client = local_client(tmp_path)
    check_run(client, run_id, run)
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    assert experiment.name == "modiff"
    assert Path(experiment.artifact_location.removeprefix("file://")) == (tmp_path / "runs" / "mlflow-artifacts")


@pytest.mark.slow  # a process killed
def test_resume_after_sigkill_continues_the_mlflow_run_without_a_repeated_or_missing_step(tmp_path: Path) -> None:
    path = settings(tmp_path, "cut", steps=8, checkpoint_every=3, eval_every=2)
    # run-wide step 7 = the encoder's 2 + the denoiser's 5: after the checkpoint at the denoiser's 3
    first = subprocess.run(
        [sys.executable, str(HERE / "_kill_at_step.py"), "7", "--", "train", str(path), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert first.returncode == -signal.SIGKILL, f"the kill did not happen: {first.stderr[-2000:]}"
    run = RunDir(tmp_path / "runs" / "cut")
    checkpoint = run.latest()
    assert (checkpoint.stage, checkpoint.step) == ("denoiser", 3)
    run_id = checkpoint.state[STATE_KEY]["mlflow"]
    client = local_client(tmp_path)
    assert max(m.step for m in client.get_metric_history(run_id, "denoiser/loss")) == 7, "MLflow holds steps 6, 7"
    assert client.get_run(run_id).info.status == "RUNNING"

    assert main(["train", str(run.path), "--resume", "--quiet"]) == 0
    assert run.latest().state[STATE_KEY]["mlflow"] == run_id
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1, "one MLflow run, continued"
    check_run(client, run_id, run.path)
    assert [m.step for m in client.get_metric_history(run_id, "denoiser/loss")] == list(range(3, 11))


@pytest.mark.slow  # a process killed
def test_a_run_killed_before_its_first_checkpoint_continues_its_mlflow_run(tmp_path: Path) -> None:
    path = settings(tmp_path, "early", steps=4, eval_every=2)
    first = subprocess.run(
        [sys.executable, str(HERE / "_kill_at_step.py"), "1", "--", "train", str(path), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert first.returncode == -signal.SIGKILL, f"the kill did not happen: {first.stderr[-2000:]}"
    run = RunDir(tmp_path / "runs" / "early")
    assert run.latest() is None, "killed before any checkpoint: no run id was kept"
    assert main(["train", str(run.path), "--resume", "--quiet"]) == 0
    client = local_client(tmp_path)
    (tracked,) = client.search_runs([client.get_experiment_by_name("modiff").experiment_id])
    assert run.latest().state[STATE_KEY]["mlflow"] == tracked.info.run_id, "the first attempt's MLflow run, continued"
    check_run(client, tracked.info.run_id, run.path)


def test_a_server_that_is_down_warns_once_and_training_finishes(tmp_path: Path) -> None:
    port = free_port()
    path = settings(tmp_path, "offline", {"tracking_uri": f"http://127.0.0.1:{port}", "http_retries": 0})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", str(path), "--quiet"]) == 0
    ours = [str(w.message) for w in caught if issubclass(w.category, TrackerWarning)]
    assert len(ours) == 1 and "'mlflow'" in ours[0] and f"127.0.0.1:{port}" in ours[0], ours
    run = RunDir(tmp_path / "runs" / "offline")
    assert run.latest().stage is None and (run.path / "metrics.jsonl").is_file(), "the run finished"


def test_a_grid_of_two_variants_and_two_seeds_is_one_experiment(tmp_path: Path) -> None:
    base = settings(tmp_path, "base")
    grid = tmp_path / "widths.toml"
    grid.write_text(
        'base = "base.toml"\nseeds = [0, 1]\n'
        '[[variant]]\nname = "narrow"\nset = { "denoiser.hidden" = 4 }\n'
        '[[variant]]\nname = "wide"\nset = { "denoiser.hidden" = 8 }\n'
    )
    assert base.is_file()
    assert main(["ablate", str(grid), "--quiet"]) == 0
    client = local_client(tmp_path)
    experiment = client.get_experiment_by_name("widths")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiment.experiment_id])
    cells = {(r.data.params["variant"], r.data.params["seed"]) for r in runs}
    assert len(runs) == 4 and cells == {("narrow", "0"), ("narrow", "1"), ("wide", "0"), ("wide", "1")}
    for r in runs:
        assert (r.data.tags["variant"], r.data.tags["seed"]) == (r.data.params["variant"], r.data.params["seed"])
        assert r.data.params["run.seed"] == r.data.params["seed"]
        assert r.info.run_name == f"{r.data.params['variant']},seed={r.data.params['seed']}"
        assert r.info.status == "FINISHED" and "denoiser/loss" in r.data.metrics


# ---------------------------------------------------------------------------
# A real tracking server on loopback
# ---------------------------------------------------------------------------


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with its own SQLite store and artifact folder; stopped after the test."""
    store = tmp_path / "server"
    with running_server(f"sqlite:///{store / 'mlflow.db'}", store / "server.log", artifacts=store / "artifacts") as url:
        yield url


@pytest.mark.slow
def test_a_run_on_a_real_mlflow_server_reads_back_with_mlflows_client(tmp_path: Path, mlflow_server: str) -> None:
    path = settings(tmp_path, "served", {"tracking_uri": mlflow_server}, eval_every=2, sample_every=2)
    assert main(["train", str(path), "--quiet"]) == 0
    run = tmp_path / "runs" / "served"
    run_id = RunDir(run).latest().state[STATE_KEY]["mlflow"]
    check_run(MlflowClient(tracking_uri=mlflow_server), run_id, run)
    assert not (tmp_path / "runs" / "mlflow.db").exists(), "nothing tracked locally when a server is named"
    assert list((tmp_path / "server" / "artifacts").rglob("settings.toml")), "the server stored the artifacts"
