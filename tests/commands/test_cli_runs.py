"""`modiff train`, `generate` and `evaluate` from the command line, on toys."""

from __future__ import annotations

import json
import os
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
    assert (
        main(
            [
                "generate",
                str(run),
                "a red square",
                "a blue square",
                "--n",
                "2",
                "--out",
                str(out),
                "--trajectory",
                "--steps",
                "3",
            ]
        )
        == 0
    )
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


def test_generate_refuses_values_no_sampler_can_honour(settings_file: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", str(settings_file), "--quiet"]) == 0
    run = str(tmp_path / "runs" / "toy")
    out = str(tmp_path / "x.png")
    cases = {
        ("--seed", "-1"): "seeds must lie in 0..",
        ("--seed", str(2**64)): "seeds must lie in 0..",
        ("--seed", str(2**64 - 1), "--n", "2"): "seeds must lie in 0..",
        ("--steps", "5000"): "the noise schedule has",
        ("--guidance", "nan"): "is not a number",
    }
    for args, message in cases.items():
        capsys.readouterr()
        assert main(["generate", run, "a red square", "--out", out, *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)


def test_evaluate_shows_the_result_before_a_read_only_run_refuses_it(
    settings_file: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import errno
    import os

    import modiff.files

    assert main(["train", str(settings_file), "--quiet"]) == 0
    capsys.readouterr()

    def read_only(src, dst, *a, **k):  # type: ignore[no-untyped-def]
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(modiff.files.os, "replace", read_only)
    assert main(["evaluate", str(tmp_path / "runs" / "toy")]) == 2
    captured = capsys.readouterr()
    assert "accuracy" in captured.out, "the numbers are shown although they cannot be saved"
    assert "evaluation.json" in captured.err and "read-only" in captured.err


def test_a_run_being_trained_before_its_first_checkpoint_says_so(settings_file: Path, tmp_path: Path, capsys) -> None:
    from modiff.runs import RunDir

    run = RunDir(tmp_path / "runs" / "toy")
    with run.lock():  # as a trainer that has not committed yet
        run.settings.write_text(settings_file.read_text())
        assert main(["generate", str(run.path), "a red square"]) == 2
    err = capsys.readouterr().err
    assert f"is being trained by process {os.getpid()}" in err and "no checkpoint yet" in err, err
    assert main(["generate", str(run.path), "a red square"]) == 2
    assert "its training stopped before the first one" in capsys.readouterr().err
