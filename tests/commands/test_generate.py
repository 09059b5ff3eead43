"""`modiff generate` as Stable Diffusion users expect it: negative prompts,
image-to-image, one PNG per image with its parameters, `--from`, seeds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modiff.cli import main
from modiff.parameters import read
from modiff.pipeline import Pipeline
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


@pytest.fixture
def run(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    data["train"]["steps"] = 20
    data["scheduler"] = {"plugin": "ddim", "num_train_timesteps": 100}  # a real schedule: other samplers can take it
    path = tmp_path / "toy.toml"
    path.write_text(dumps(data))
    assert main(["train", str(path), "--quiet"]) == 0
    return tmp_path / "runs" / "toy"


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_negative_prompts_change_the_image(run: Path) -> None:
    pipe = Pipeline.load(run)
    plain = pipe.generate_tensor(["a red square"], seed=3, guidance=4.0)
    empty = pipe.generate_tensor(["a red square"], seed=3, guidance=4.0, negative_prompt="")
    steered = pipe.generate_tensor(["a red square"], seed=3, guidance=4.0, negative_prompt="a blue square")
    assert torch.equal(plain, empty), "the empty negative prompt is the default (the null conditioning)"
    assert not torch.allclose(plain, steered, atol=1e-4)
    with pytest.raises(Exception, match="one, or one per prompt"):
        pipe.generate_tensor(["a", "b"], negative_prompt=["x", "y", "z"])


def test_seed_n_gives_consecutive_seeds_each_equal_to_its_image_alone(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "batch"
    assert (
        main(["generate", str(run), "a red square", "a blue square", "--n", "2", "--seed", "5", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    names = sorted(p.name for p in out.glob("p*.png"))
    assert names == ["p00-seed5.png", "p00-seed6.png", "p01-seed7.png", "p01-seed8.png"]
    assert all(f"seed {s}:" in printed for s in (5, 6, 7, 8)) and (out / "grid.png").is_file()
    alone = tmp_path / "alone"
    assert main(["generate", str(run), "a blue square", "--seed", "8", "--out", str(alone)]) == 0
    assert np.array_equal(pixels(alone / "p00-seed8.png"), pixels(out / "p01-seed8.png"))
    pipe = Pipeline.load(run)
    batch = pipe.generate_tensor(["a red square", "a blue square"], seeds=[5, 8])
    single = pipe.generate_tensor(["a blue square"], seed=8)
    torch.testing.assert_close(batch[1:], single, rtol=1e-5, atol=1e-6)


def test_parameters_round_trip_through_from_to_the_same_image(run: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    assert main(["generate", str(run), "a green square", "--seed", "42", "--steps", "7", "--guidance", "2.5",
                 "--negative", "a red square", "--scheduler", "euler", "--out", str(first)]) == 0
    made = first / "p00-seed42.png"
    params = read(made)
    assert (params.prompt, params.negative_prompt, params.seed, params.steps, params.guidance, params.sampler) == (
        "a green square", "a red square", 42, 7, 2.5, "euler")
    assert params.run == str(run.resolve()) and len(params.model_hash) == 10
    assert "Negative prompt: a red square" in Image.open(made).info["parameters"]
    again = tmp_path / "again"
    assert main(["generate", "--from", str(made), "--out", str(again)]) == 0
    assert np.array_equal(pixels(again / "p00-seed42.png"), pixels(made)), "the same image, bit for bit"
    other = tmp_path / "other"
    assert main(["generate", "--from", str(made), "--seed", "43", "--out", str(other)]) == 0
    assert not np.array_equal(pixels(other / "p00-seed43.png"), pixels(made)), "a flag given wins over the file's"


def test_image_to_image_from_the_command_line_is_reproducible(run: Path, tmp_path: Path) -> None:
    start = tmp_path / "start.png"
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(start)
    out = tmp_path / "i2i"
    assert (
        main(["generate", str(run), "a red square", "--image", str(start), "--strength", "0.5", "--out", str(out)]) == 0
    )
    made = out / "p00-seed0.png"
    params = read(made)
    assert params.strength == 0.5 and params.init_image == str(start.resolve()) and params.init_image_hash
    again = tmp_path / "again"
    assert main(["generate", "--from", str(made), "--out", str(again)]) == 0
    assert np.array_equal(pixels(again / "p00-seed0.png"), pixels(made))
    kept = tmp_path / "kept"
    assert main(["generate", str(run), "x", "--image", str(start), "--strength", "0", "--out", str(kept)]) == 0
    pipe = Pipeline.load(run)
    with torch.no_grad():
        image = torch.full((1, 3, 8, 8), 200 / 127.5 - 1)
        round_trip = pipe.decode(pipe.components.encoder.encode(image))
    expected = ((round_trip.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(pixels(kept / "p00-seed0.png"), expected), "strength 0 returns the image"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_get_the_users_permissions(run: Path, tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        out = tmp_path / f"perm-{umask:o}"
        assert main(["generate", str(run), "a red square", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    for path in (out / "p00-seed0.png", out / "grid.png"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, oct(path.stat().st_mode)


def test_from_needs_a_modiff_png(tmp_path: Path, capsys, use_registry) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    assert main(["generate", "--from", str(plain)]) == 2
    assert "no 'parameters' text chunk" in capsys.readouterr().err
    assert main(["generate"]) == 2
    assert "give the run" in capsys.readouterr().err


def test_a_folder_that_refuses_the_images_is_a_clear_error(run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import errno

    import modiff.files

    def full(src, dst, *a, **k):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(modiff.files.os, "replace", full)
    assert main(["generate", str(run), "a red square", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "disk is full" in err and "Traceback" not in err
