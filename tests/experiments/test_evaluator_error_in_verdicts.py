"""The evaluator's measured error, carried into `modiff evaluate` and the ablation report (issue 38)."""

from __future__ import annotations

from typing import Any

from modiff import ablation, report, stats
from modiff.workflows import format_table


def _stated(accuracy: float, measured: bool = True) -> dict[str, Any]:
    return {
        "judge": "rules",
        "image_size": 32,
        "measured": measured,
        "error": {"accuracy": accuracy, "colour_accuracy": 0.004},
        "measured_on": "benchmarks/results/evaluator/known-answers-32.npz",
    }


def test_an_evaluator_states_its_error_only_when_measured() -> None:
    assert stats.evaluator_error({"accuracy": 0.9, "evaluator_error": _stated(0.02)}) == {
        "accuracy": 0.02,
        "colour_accuracy": 0.004,
    }
    assert stats.evaluator_error({"accuracy": 0.9, "evaluator_error": _stated(0.02, measured=False)}) == {}
    assert stats.evaluator_error({"accuracy": 0.9}) == {} == stats.evaluator_error(None)


def test_modiff_evaluate_prints_the_error_beside_the_accuracies() -> None:
    text = format_table({"accuracy": 0.9, "evaluator_error": _stated(0.02)})
    assert text.splitlines()[0].startswith("accuracy")
    assert "evaluator error" in text and "accuracy 2.0 %" in text and "known-answers-32.npz" in text
    assert "not measured" in format_table({"accuracy": 0.9, "evaluator_error": _stated(0.02, measured=False)})
    assert "evaluator error" not in format_table({"mean_iou": 0.5})


def _record(error: float) -> dict[str, Any]:
    return {"status": "done", "evaluation": {"accuracy": 0.8, "evaluator_error": _stated(error)}}


def _summary(difference: float, error: dict[str, float]) -> dict[str, Any]:
    result = {
        "metric": "accuracy",
        "verdict": "a better",
        "difference": {"value": difference, "low": difference - 0.01, "high": difference + 0.01},
    }
    return {
        "comparisons": [{"claim": "c", "a": "x", "b": "y", "results": [result]}],
        "names": {"accuracy": "accuracy"},
        "evaluator_error": error,
    }


def test_the_report_takes_the_largest_error_the_runs_state() -> None:
    assert ablation._evaluator_error([_record(0.01), _record(0.03)]) == {"accuracy": 0.03, "colour_accuracy": 0.004}
    assert ablation._evaluator_error([{"status": "done", "evaluation": {"accuracy": 0.8}}]) == {}


def test_the_report_marks_a_difference_smaller_than_the_evaluators_error() -> None:
    _, rows = report.verdict_table(_summary(0.02, {"accuracy": 0.03}))
    assert "smaller than the evaluator's measured error, 3.0 %" in rows[0][3][0]
    _, rows = report.verdict_table(_summary(0.05, {"accuracy": 0.03}))
    assert "measured error" not in rows[0][3][0]
    _, rows = report.verdict_table(_summary(0.02, {}))
    assert "measured error" not in rows[0][3][0]
    assert "accuracy 3.0 %" in report.error_text(_summary(0.02, {"accuracy": 0.03}))
    assert report.error_text(_summary(0.02, {})) == ""
