"""Contract for :class:`modiff.protocols.Evaluator`."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ...protocols import Evaluator
from .base import Contract


class EvaluatorContract(Contract):
    """Every evaluator: returns finite numbers for a pipeline.

    Override ``pipeline()`` to return a (tiny) :class:`modiff.Pipeline` or a
    stand-in with the methods your evaluator calls.
    """

    role: ClassVar[str] = "evaluator"

    def pipeline(self) -> Any:
        raise NotImplementedError("override pipeline() to give the evaluator something to evaluate")

    def test_is_an_evaluator(self) -> None:
        assert isinstance(self.build(), Evaluator)

    def test_returns_finite_numbers(self) -> None:
        result = self.build().evaluate(self.pipeline())
        assert result, "an evaluator must report at least one number"
        for key, value in result.items():
            if isinstance(value, (int, float)):
                assert math.isfinite(value), f"{key} = {value}"
