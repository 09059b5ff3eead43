"""``digits`` and ``digit-accuracy`` pass modiff's Dataset and Evaluator contracts."""

from __future__ import annotations

from typing import Any, ClassVar

from modiff.testing.contracts import DatasetContract, EvaluatorContract
from modiff_digits.testing import BlankPipeline, TruthPipeline


class TestDigitsContract(DatasetContract):
    plugin = "digits"
    settings: ClassVar[dict[str, Any]] = {"image_size": 16}


class TestDigitsHoldoutContract(DatasetContract):
    plugin = "digits"
    settings: ClassVar[dict[str, Any]] = {"image_size": 64, "split": "holdout", "holdout_fraction": 0.1, "seed": 3}


class TestDigitAccuracyContract(EvaluatorContract):
    """Real digits of the prompted class."""

    plugin = "digit-accuracy"
    settings: ClassVar[dict[str, Any]] = {"samples_per_digit": 2}

    def pipeline(self) -> Any:
        return TruthPipeline(32)

    def prompts(self) -> list[str]:
        return ["a handwritten seven", "the digit 3", "no digit here"]


class TestDigitAccuracyBlankContract(TestDigitAccuracyContract):
    """Black images: still finite, deterministic numbers."""

    def pipeline(self) -> Any:
        return BlankPipeline(16)
