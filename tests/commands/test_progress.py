"""Progress with the time left while sampling, evaluating and running a grid,
and none with --quiet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    assert "0/2 runs done, ? left" in logged[0] and "1/2 runs done" in logged[1] and "left" in logged[1], logged
    quiet: list[str] = []
    path.write_text('base = "toy.toml"\n[grid]\n"denoiser.hidden" = [4, 6]\n')
    run_ablation(read_ablation(path), progress=False, log=quiet.append)
    assert not any("runs done" in line for line in quiet), quiet


def test_quiet_nests_and_restores() -> None:
    assert progress.enabled()
    with progress.quiet():
        assert not progress.enabled()
        with progress.quiet(False):
            assert not progress.enabled()  # an inner block cannot undo an outer --quiet
    assert progress.enabled()
