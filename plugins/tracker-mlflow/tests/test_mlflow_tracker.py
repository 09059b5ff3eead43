"""The MLflow tracker on its own, read back with MLflow's client from the local SQLite store."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from PIL import Image

import modiff
from modiff_mlflow import MlflowSettings, build_mlflow

mlflow = pytest.importorskip("mlflow")
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def _run(runs: Path, **kw: object) -> modiff.TrackedRun:
    path = runs / "r"
    path.mkdir(parents=True, exist_ok=True)
    return modiff.TrackedRun(name="r", path=path, runs_dir=runs, **kw)  # type: ignore[arg-type]


def _client(runs: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{(runs / 'mlflow.db').resolve()}")


def test_telemetry_is_off_once_the_plugin_is_imported() -> None:
    from mlflow.telemetry.utils import is_telemetry_disabled

    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert is_telemetry_disabled()


def test_a_run_and_its_resume_read_back_from_the_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    first = build_mlflow(MlflowSettings(), _run(runs))
    run_id = first.start(_run(runs, group="grid", tags={"variant": "a", "seed": "1"}))
    first.log_params({"train.lr": 0.002, "denoiser.channels": "[16, 32]", "run.precision": "fp32"})
    for step in (1, 2, 3, 4):
        first.log_scalars(step, {"denoiser/loss": 1.0 / step, "denoiser/lr": 0.1})
    first.log_image(2, "samples", _png(runs / "a.png", (255, 0, 0)))
    first.log_image(4, "samples", _png(runs / "b.png", (0, 255, 0)))
    # killed here: the checkpoint holds step 2, so steps 3 and 4 come again
    resumed = build_mlflow(MlflowSettings(), _run(runs))
    assert resumed.start(_run(runs, run_id=run_id, resume_after=2, group="grid", tags={"variant": "a"})) == run_id
    resumed.log_params({"train.lr": 0.002, "train.steps": 6})
    for step in (3, 4, 5, 6):
        resumed.log_scalars(step, {"denoiser/loss": 1.0 / step, "denoiser/lr": 0.1})
    resumed.log_image(4, "samples", _png(runs / "c.png", (0, 0, 255)))
    resumed.log_image(6, "samples", _png(runs / "d.png", (0, 0, 255)))
    result = _png(runs / "r" / "final.png", (9, 9, 9))
    (runs / "r" / "samples").mkdir()
    nested = _png(runs / "r" / "samples" / "final-grid.png", (9, 9, 9))
    resumed.log_artifacts([result, nested])
    resumed.close()

    client = _client(runs)
    tracked = client.get_run(run_id)
    assert tracked.info.status == "FINISHED"
    assert client.get_experiment(tracked.info.experiment_id).name == "grid"
    assert tracked.data.params["train.lr"] == "0.002"
    assert tracked.data.params["train.steps"] == "6"  # new on resume
    assert tracked.data.params["variant"] == "a" and tracked.data.params["seed"] == "1"
    assert tracked.data.tags["variant"] == "a" and tracked.data.tags["seed"] == "1"
    for key in ("denoiser/loss", "denoiser/lr"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3, 4, 5, 6]
    images = sorted(a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png"))
    assert [p.split("+step+")[1].split("+")[0] for p in images] == ["2", "4", "6"]
    assert {a.path for a in client.list_artifacts(run_id)} >= {"final.png", "samples"}
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == ["samples/final-grid.png"]
    artifacts = Path(tracked.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(runs.resolve() / "mlflow-artifacts")


def test_a_server_that_is_down_fails_the_start_within_seconds(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tracker = build_mlflow(MlflowSettings(tracking_uri=f"http://127.0.0.1:{port}", http_retries=0), _run(tmp_path))
    began = time.monotonic()
    with pytest.raises(MlflowException, match="127.0.0.1"):
        tracker.start(_run(tmp_path))
    assert time.monotonic() - began < 30
    tracker.close()  # safe after the failure, and does not wait on the server again
