"""Progress with the time left while sampling, evaluating and running a grid,
and none with --quiet."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from modiff import ablation as ablation_module
from modiff import progress
from modiff.ablation import read_ablation, run_ablation
from modiff.cli import main
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


@pytest.fixture
def settings(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    data["train"]["steps"] = 4
    data["scheduler"] = {"plugin": "ddim", "num_train_timesteps": 100}
    path = tmp_path / "toy.toml"
    path.write_text(dumps(data))
    return path


@pytest.fixture
def run(settings: Path) -> Path:
    assert main(["train", str(settings), "--quiet"]) == 0
    return settings.parent / "runs" / "toy"


def test_generate_shows_the_sampler_steps_with_the_time_left_and_quiet_shows_none(run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["generate", str(run), "a red square", "a blue square", "--steps", "3", "--out", str(run / "a")]) == 0
    err = capsys.readouterr().err
    assert "sampling" in err and "3/3 [" in err and "<" in err and "step" in err  # one batch of 3 steps, elapsed<left
    assert "2/2 images" in err
    assert main(["generate", str(run), "a red square", "--steps", "3", "--out", str(run / "b"), "--quiet"]) == 0
    assert "sampling" not in capsys.readouterr().err


def test_evaluate_shows_its_wait_as_evaluating_and_quiet_shows_none(run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    err = capsys.readouterr().err
    assert "evaluating" in err and "<" in err
    assert main(["evaluate", str(run), "--quiet"]) == 0
    assert "evaluating" not in capsys.readouterr().err


def test_an_ablation_says_runs_done_and_the_time_left(settings: Path, tmp_path: Path) -> None:
    path = tmp_path / "abl.toml"
    path.write_text('base = "toy.toml"\n[grid]\n"denoiser.hidden" = [4, 8]\n')
    logged: list[str] = []
    run_ablation(read_ablation(path), progress=True, log=logged.append)
    logged = [line for line in logged if line.startswith("[")]  # the runs' lines, not their status lines
    assert "0/2 runs done, ? left" in logged[0] and "1/2 runs done" in logged[1] and "left" in logged[1], logged
    quiet: list[str] = []
    path.write_text('base = "toy.toml"\n[grid]\n"denoiser.hidden" = [4, 6]\n')
    run_ablation(read_ablation(path), progress=False, log=quiet.append)
    assert not any("runs done" in line for line in quiet), quiet


def _append(path: Path, *entries: dict) -> None:
    with open(path, "a") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)


def test_a_watched_run_in_a_log_file_is_one_line_per_state_change(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    logged: list[str] = []
    watch = progress.GridWatch(3, 1, logged.append, terminal=False)
    assert watch.bar is None  # a log file: no bar redrawn, the driver's "[k/N] ... runs done" lines instead
    watch.started("a", metrics, {"encoder": 2, "denoiser": 4})  # no metrics file yet: nothing to say
    watch.poll(force=True)
    assert logged == []
    _append(metrics, {"stage": "encoder", "step": 1}, {"stage": "encoder", "step": 2})
    watch.poll(force=True)
    _append(metrics, {"stage": "denoiser", "step": 1})
    watch.poll(force=True)
    _append(metrics, {"stage": "denoiser", "step": 2})
    watch.poll(force=True)  # the same stage, no new accuracy: no line
    assert [line.rsplit(",", 1)[0] for line in logged] == ["  a: encoder 2/2", "  a: denoiser 1/4"], logged
    assert logged[0].endswith(" s")
    with open(metrics, "a") as f:  # an evaluation still being written is read once it is whole
        f.write('{"stage": "denoiser", "step": 2, "kind": "eval", "train_seconds": 1.5, ')
    watch.poll(force=True)
    assert len(logged) == 2
    with open(metrics, "a") as f:
        f.write('"eval": {"accuracy": 0.75, "count": 9}}\n')
    watch.poll(force=True)
    assert logged[-1].startswith("  a: denoiser 2/4, ") and logged[-1].endswith(" s, accuracy 0.750"), logged
    watch.ended("a")
    _append(metrics, {"stage": "denoiser", "step": 3})
    watch.poll(force=True)
    assert len(logged) == 3  # an ended run is no longer followed
    watch.close()


def test_a_watched_grid_on_a_terminal_has_a_bar_and_a_line_per_running_run(tmp_path: Path, capsys) -> None:
    logged: list[str] = []
    watch = progress.GridWatch(3, 1, logged.append, terminal=True)
    _append(tmp_path / "a.jsonl", {"stage": "denoiser", "step": 3})
    watch.started("a", tmp_path / "a.jsonl", {"denoiser": 4})
    watch.started("b", tmp_path / "b.jsonl", {"denoiser": 4})
    watch.log("[3/3] b")
    watch.poll(force=True)
    watch.ended("a")
    watch.close()
    out, err = capsys.readouterr()
    assert "[3/3] b" in out and logged == []  # the driver's lines are written above the bars, not through log
    assert "runs" in err and "2/3" in err  # one run finished during the watch
    assert "a: denoiser 3/4, 0 s" in err and "b: starting" in err
    with progress.quiet():
        silent = progress.GridWatch(3, 1, logged.append, terminal=True)
        silent.started("a", tmp_path / "a.jsonl", {"denoiser": 4})
        silent.poll(force=True)
        silent.close()
    assert silent.bar is None and logged == [] and capsys.readouterr() == ("", "")


def test_a_grid_shows_where_each_running_run_stands(settings: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(progress.GridWatch, "EVERY", 0.001)
    path = tmp_path / "abl.toml"
    path.write_text('base = "toy.toml"\n[grid]\n"denoiser.hidden" = [4, 8]\n')
    logged: list[str] = []
    run_ablation(read_ablation(path), progress=True, log=logged.append)
    for name in ("denoiser.hidden=4", "denoiser.hidden=8"):
        status = [line for line in logged if line.startswith(f"  {name}: ")]
        assert status and len(status) <= 3, logged  # encoder, text_embedder, denoiser: one line each at most
        assert any(line.startswith(f"  {name}: denoiser ") and "/4, " in line for line in status), logged


FAKE_JOB = """
import json, pathlib, sys, time
run, name = pathlib.Path(sys.argv[1]), sys.argv[2]
run.mkdir(parents=True, exist_ok=True)
with open(run / "metrics.jsonl", "a") as f:
    for entry in ({"stage": "denoiser", "step": 2}, {"stage": "denoiser", "step": 4, "kind": "eval",
                                                     "eval": {"accuracy": 0.5}}):
        f.write(json.dumps(entry) + "\\n")
        f.flush()
        time.sleep(0.4)
(run / "cell.json").write_text(json.dumps({"name": name, "group": name, "changes": {}, "seed": 0, "status": "done"}))
"""


def test_jobs_side_by_side_each_show_where_they_stand(settings: Path, tmp_path: Path, monkeypatch) -> None:
    """With --jobs the driver loop reads every running job's metrics (the jobs
    here are stand-ins that write two lines, then their record)."""
    monkeypatch.setattr(progress.GridWatch, "EVERY", 0.001)

    real_job = ablation_module._job

    def fake_job(ablation, cell, threads, log_path):  # type: ignore[no-untyped-def]
        run = log_path.parent.parent / cell.name
        return dataclasses.replace(real_job(ablation, cell, threads, log_path),
                                   argv=(sys.executable, "-c", FAKE_JOB, str(run), cell.name))

    monkeypatch.setattr(ablation_module, "_job", fake_job)
    path = tmp_path / "abl.toml"
    path.write_text('base = "toy.toml"\n[grid]\n"denoiser.hidden" = [4, 8]\n')
    logged: list[str] = []
    run_ablation(read_ablation(path), progress=True, log=logged.append, jobs=2)
    for name in ("denoiser.hidden=4", "denoiser.hidden=8"):
        status = [line for line in logged if line.startswith(f"  {name}: ")]
        assert 1 <= len(status) <= 2, logged  # a line per state change: its stage, then its accuracy
        assert status[-1].startswith(f"  {name}: denoiser 4/4, ") and status[-1].endswith(" s, accuracy 0.500"), logged


def test_quiet_nests_and_restores() -> None:
    assert progress.enabled()
    with progress.quiet():
        assert not progress.enabled()
        with progress.quiet(False):
            assert not progress.enabled()  # an inner block cannot undo an outer --quiet
    assert progress.enabled()
