"""``modiff generate RUN --scheduler lcm`` (issue 40): the lcm sampler chosen at
generation time on a toy run, recorded in the image's parameters, and (though
it re-noises between steps) the same image again from them, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modiff.cli import main
from modiff.parameters import read
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps

pytest.importorskip("modiff_schedulers", reason="lcm is a sampler of modiff-schedulers")


@pytest.fixture
def run(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    data["scheduler"] = {"plugin": "ddim", "num_train_timesteps": 100}  # a real schedule: lcm can take it
    path = tmp_path / "toy.toml"
    path.write_text(dumps(data))
    assert main(["train", str(path), "--quiet"]) == 0
    return tmp_path / "runs" / "toy"


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_generate_with_lcm_records_it_and_repeats_from_the_png(run: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    args = ["generate", str(run), "a red square", "--n", "2", "--seed", "3", "--steps", "4", "--guidance", "1"]
    assert main([*args, "--scheduler", "lcm", "--out", str(first)]) == 0
    made = first / "p00-seed3.png"
    params = read(made)
    assert (params.sampler, params.steps, params.guidance) == ("lcm", 4, 1.0)
    again = tmp_path / "again"
    assert main(["generate", "--from", str(made), "--out", str(again)]) == 0
    assert np.array_equal(pixels(again / "p00-seed3.png"), pixels(made)), "the same image, bit for bit"
    assert not np.array_equal(pixels(first / "p00-seed4.png"), pixels(made)), "another seed, another image"
    ddim = tmp_path / "ddim"
    assert main([*args, "--out", str(ddim)]) == 0
    assert not np.array_equal(pixels(ddim / "p00-seed3.png"), pixels(made)), "the run's own sampler draws otherwise"
