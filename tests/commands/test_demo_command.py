"""``modiff demo`` itself, end to end, shrunk by ``--set`` to a few seconds.

Every stage the demo trains (autoencoder, the text transformer's layout
pretext, denoiser) runs two steps on tiny networks, and two prompts are
sampled with two steps and evaluated; the
test checks that the command writes what it promises: a run that loads, the sample
grid, the denoising trajectory (strip and GIF), the evaluation JSON with the
prompt accuracies and the run's training seconds (also when a second call only
resumes the finished run), and the summary.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from modiff import Pipeline
from modiff.cli import main
from modiff.runs import RunDir

#: The demo's settings (core/modiff/configs/demo.toml), every stage made tiny.
TINY = [
    "run.device=cpu",
    "data.size=16",
    "encoder.channels=[8, 8, 8]",
    "encoder.norm_num_groups=4",
    "text_embedder.width=16",
    "text_embedder.depth=1",
    "text_embedder.heads=2",
    "text_embedder.pretext_grid=4",
    "denoiser.channels=[16, 16]",
    "denoiser.norm_num_groups=4",
    "train.steps=2",
    "train.batch_size=4",
    "train.warmup_steps=1",
    "train.checkpoint_every=2",
    "train.encoder.steps=2",
    "train.encoder.batch_size=4",
    "train.text_embedder.steps=2",
    "train.text_embedder.batch_size=4",
    "sample.steps=2",
    'sample.prompts=["a red circle in the top left", "a blue square at the bottom"]',
    "evaluator.num_prompts=2",
    "evaluator.steps=2",
]


def test_demo_trains_samples_and_evaluates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--quiet"]
    for setting in TINY:
        args += ["--set", setting]
    assert main(args) == 0
    printed = capsys.readouterr().out

    for name in ("samples.png", "denoising-trajectory.png", "denoising-trajectory.gif", "summary.md", "settings.toml"):
        assert (out / name).is_file(), f"the demo did not write {name}"
    restored = Pipeline.load(out)  # the demo's folder is a complete run
    for role in ("encoder", "text_embedder", "conditioner", "denoiser"):
        assert getattr(restored.components, role) is not None, f"no trained {role} in the run"
    with Image.open(out / "samples.png") as grid:
        assert grid.width > 0 and grid.height > 0
    with Image.open(out / "denoising-trajectory.gif") as gif:
        assert getattr(gif, "n_frames", 1) >= 2, "the trajectory GIF should have one frame per step and the result"

    result = json.loads((out / "evaluation.json").read_text())
    for key in ("accuracy", "colour_accuracy", "shape_accuracy", "position_accuracy", "count_accuracy"):
        assert 0.0 <= result[key] <= 1.0, f"{key} = {result.get(key)}"
    assert result["num_prompts"] == 2
    assert result["train_seconds"] > 0 and result["total_seconds"] >= result["train_seconds"]
    # the run's own training time, by the trainer's clock in its checkpoint (sampling and evaluation aside)
    assert result["train_seconds"] == RunDir(out).latest().train_seconds

    summary = (out / "summary.md").read_text()
    assert "samples.png" in summary and "denoising-trajectory.png" in summary and "accuracy" in summary
    assert "prompt accuracy:" in printed and str(out / "samples.png") in printed

    # Again: a finished run is only resumed to sample and evaluate; it still reports the run's training time.
    assert main(args) == 0
    again = json.loads((out / "evaluation.json").read_text())
    assert again["train_seconds"] == result["train_seconds"], (again["train_seconds"], result["train_seconds"])
