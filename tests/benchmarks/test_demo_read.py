"""benchmarks/demo.py --read: a demo already trained (on a busy machine, say)
gives a result file of its accuracies, prompts without a place on a line of
their own with an interval, beside the other accuracies (issue 37)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def _finished_demo(out: Path) -> None:
    """A demo folder as `modiff demo` leaves it, with four prompts: two placed, two without a place."""
    ids = ["a red circle at the top", "a blue square", "a green triangle in the center", "a red circle"]
    metrics = {"accuracy": [1, 1, 0, 0], "one_object_accuracy": [1, 1, 0, 0],
               "two_object_accuracy": [None] * 4, "holdout_accuracy": [None] * 4,
               "unplaced_accuracy": [None, 1, None, 0], "placed_accuracy": [1, None, 0, None]}
    evaluation = {"accuracy": 0.5, "one_object_accuracy": 0.5, "two_object_accuracy": None,
                  "holdout_accuracy": None, "unplaced_accuracy": 0.5, "placed_accuracy": 0.5, "num_prompts": 4,
                  "num_unplaced": 2, "train_seconds": 12.5, "evaluator_error": {"judge": "learned"},
                  "per_item": {"ids": ids, "metrics": metrics}}
    out.mkdir()
    (out / "evaluation.json").write_text(json.dumps(evaluation))
    (out / "environment.json").write_text(json.dumps({"threads": 2}))


def test_read_writes_a_demos_accuracies_with_the_unplaced_ones(
    benchmark_script: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    demo = benchmark_script("demo")
    _finished_demo(tmp_path / "demo")
    result = tmp_path / "result.json"
    assert demo.read_only(tmp_path / "demo", result, "one run") == 0
    written = json.loads(result.read_text())
    assert written["note"] == "one run"
    assert written["demo"]["unplaced_accuracy"] == 0.5 and written["demo"]["num_unplaced"] == 2
    assert written["demo"]["evaluator_error"] == {"judge": "learned"}  # who read the images
    assert written["demo"]["environment"] == {"threads": 2} and "per_item" not in written["demo"]
    assert written["demo"]["train_seconds"] == 12.5  # no checkpoint in this folder: the evaluation's
    assert set(written["intervals"]) >= {"one_object_accuracy", "unplaced_accuracy", "placed_accuracy"}
    assert written["intervals"]["unplaced_accuracy"]["value"] == 0.5


def test_read_takes_the_runs_training_seconds_from_its_checkpoint(
    benchmark_script: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    """A demo whose evaluation.json holds a call's own seconds (one that only resumed it, before
    `modiff demo` wrote the run's): the checkpoint's count, every stage of every call, wins."""
    demo = benchmark_script("demo")
    _finished_demo(tmp_path / "demo")
    checkpoint = tmp_path / "demo" / "checkpoints" / "c1"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps({"stages_done": ["denoiser"], "train_seconds": 2389.4}))
    (tmp_path / "demo" / "LATEST").write_text("c1")
    assert demo.read_demo(tmp_path / "demo")["train_seconds"] == 2389.4


def test_read_of_a_folder_without_an_evaluation_says_so(
    benchmark_script: Callable[[str], ModuleType], tmp_path: Path, capsys
) -> None:
    demo = benchmark_script("demo")
    assert demo.read_only(tmp_path, None) == 2
    assert "no evaluation.json" in capsys.readouterr().out
