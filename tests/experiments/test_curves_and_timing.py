"""What benchmarks/learning_curve.py measured, in `modiff ablate` (issue 36, item 1): learning
curves against seconds and steps, a load-free time axis from interleaved step timing
(``[timing]``), and a final evaluation on more prompts than the curve's (``[final_evaluation]``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import Field

import modiff
from modiff.ablation import read_ablation, run_ablation, validate
from modiff.errors import SettingsError
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


class CountingSettings(modiff.ComponentSettings):
    prompts: int = Field(10, ge=1, description="How many prompts an evaluation scores.")


class CountingEvaluator:
    """Scores ``prompts`` prompts (outcomes drawn from the run's seed), and says how many."""

    def __init__(self, settings: CountingSettings, context: Any) -> None:
        self.s, self.seed = settings, int(context.run.seed)

    def evaluate(self, pipeline: Any, *, prompts: Any = None) -> dict[str, Any]:
        outcomes = (np.random.default_rng(self.seed).random(self.s.prompts) < 0.5).astype(int).tolist()
        ids = [f"prompt {i}" for i in range(self.s.prompts)]
        return {"accuracy": float(np.mean(outcomes)), "scored": self.s.prompts,
                "per_item": {"ids": ids, "metrics": {"accuracy": outcomes}}}


class CountingPlugin:
    __name__ = "counting"

    @modiff.hookimpl
    def register_evaluators(self, register: Any) -> None:
        register("counting", lambda s, ctx: CountingEvaluator(s, ctx), CountingSettings, description="counts")


@pytest.fixture
def base(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), CountingPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    data["evaluator"] = {"plugin": "counting"}
    path = tmp_path / "base.toml"
    path.write_text(dumps(data))
    return path


GRID = """
base = "base.toml"
seeds = [0, 1]
[set]
"train.steps" = 4
"train.eval_every" = 2
[[variant]]
name = "small"
set = { "denoiser.hidden" = 4 }
[[variant]]
name = "big"
set = { "denoiser.hidden" = 96 }
[[compare]]
a = "big"
b = "small"
metrics = ["accuracy"]
[timing]
rounds = 1
steps = 1
[final_evaluation]
prompts = 30
"""


def test_curves_timing_and_a_final_evaluation_on_more_prompts(base: Path, tmp_path: Path) -> None:
    path = tmp_path / "abl.toml"
    path.write_text(GRID)
    logged: list[str] = []
    records = run_ablation(read_ablation(path), progress=False, log=logged.append)
    out = tmp_path / "runs" / "abl"
    assert all(r["status"] == "done" for r in records)
    # the curve's evaluations score the evaluator's own 10 prompts; the final one the file's 30, paired by prompt
    assert all([p["eval"]["scored"] for p in r["curve"]] == [10, 10] for r in records)
    assert all(len(r["evaluation"]["per_item"]["ids"]) == 30 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["comparisons"][0]["results"][0]["paired"]
    # every cell's training step, timed in this process; costs relative to the first cell's
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["cells"]) == {"small", "big"} and timing["cells"]["big"]["seconds_per_step"]["denoiser"] > 0
    costs = summary["timing"]
    assert costs["reference"] == "small" and costs["cells"]["small"]["denoiser_relative"] == 1.0
    assert costs["cells"]["big"]["denoiser_params"] > costs["cells"]["small"]["denoiser_params"]
    md = (out / "report.md").read_text()
    assert "step cost (× small)" in md and "load-free s" in md and "timed interleaved" in md
    svg = (out / "curve-accuracy.svg").read_text()
    assert all(f">{axis}" in svg for axis in ("training seconds", "denoiser steps", "load-free seconds"))
    # a second run measures nothing again: the same cells under the same settings
    logged.clear()
    run_ablation(read_ablation(path), progress=False, log=logged.append)
    assert not any("timing every cell" in line for line in logged), logged


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[final_evaluation]\nprompt = 30\n", "[final_evaluation]"),
        ("[final_evaluation]\nprompts = 0\n", "prompts"),
        ("[timing]\nround = 3\n", "unknown key 'timing.round'"),
    ],
)
def test_final_evaluation_and_timing_are_checked_before_training(
    base: Path, tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "abl.toml"
    path.write_text('base = "base.toml"\n' + body)
    with pytest.raises(SettingsError) as err:
        validate(read_ablation(path))
    assert message in str(err.value)
