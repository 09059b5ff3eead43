"""`modiff train`, `generate` and `evaluate` from the command line, on toys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from modiff.cli import main
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


@pytest.fixture
def settings_file(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    path = tmp_path / "toy.toml"
    path.write_text(dumps(data))
    return path


def test_train_generate_evaluate(settings_file: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", str(settings_file), "--quiet"]) == 0
    run = tmp_path / "runs" / "toy"
    from modiff.runs import RunDir

    assert RunDir(run).weights("denoiser").is_file()
    out = tmp_path / "grid.png"
    assert main(["generate", str(run), "a red square", "a blue square", "--n", "2", "--out", str(out), "--trajectory", "--steps", "3"]) == 0
    grid = Image.open(out)
    assert grid.width > 2 * 128 and grid.height > 2 * 128
    strip = tmp_path / "grid-trajectory.png"
    gif = Image.open(tmp_path / "grid-trajectory.gif")
    assert strip.is_file() and gif.n_frames == 4  # three steps and the final image
    assert Image.open(strip).width > 4 * 96, "every step is a column of the strip, plus the final image"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "accuracy" in result and (run / "evaluation.json").is_file()


def test_user_mistakes_exit_2(settings_file: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", str(settings_file), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", str(settings_file), "--quiet"]) == 2
    assert "already exists; continue it with `modiff train" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "nope"), "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "runs" / "toy"), "x", "--n", "0"]) == 2
    assert main(["train", str(settings_file), "--set", "train.steps=-1"]) == 2
    assert "[train] steps = -1" in capsys.readouterr().err
