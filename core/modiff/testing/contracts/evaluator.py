"""Contract for :class:`modiff.protocols.Evaluator`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ...protocols import Evaluator
from .base import Contract


def _numbers(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class EvaluatorContract(Contract):
    """Every evaluator: returns finite numbers for a pipeline, the same ones
    for the same (deterministic) pipeline, and honours ``prompts=``.

    Override ``pipeline()`` to return a (tiny) :class:`modiff.Pipeline` or a
    stand-in with the methods your evaluator calls, and ``prompts()`` to give
    a few prompts your evaluator understands (``None`` skips that test).
    """

    role: ClassVar[str] = "evaluator"

    def pipeline(self) -> Any:
        raise NotImplementedError("override pipeline() to give the evaluator something to evaluate")

    def prompts(self) -> Sequence[str] | None:
        """A few prompts for ``evaluate(..., prompts=...)``; ``None`` to skip."""
        return None

    def test_is_an_evaluator(self) -> None:
        assert isinstance(self.build(), Evaluator)

    def test_returns_finite_numbers(self) -> None:
        result = self.build().evaluate(self.pipeline())
        assert isinstance(result, Mapping) and result, "an evaluator must report at least one number"
        assert all(isinstance(k, str) for k in result)
        numbers = _numbers(result)
        assert numbers, "an evaluator must report at least one number"
        for key, value in numbers.items():
            assert math.isfinite(value), f"{key} = {value}"

    def test_deterministic(self) -> None:
        # Same evaluator settings, same deterministic pipeline: same numbers.
        # Timings (names with "time" or "second", or ending in "_s") are excluded.
        a = _numbers(self.build().evaluate(self.pipeline()))
        b = _numbers(self.build().evaluate(self.pipeline()))
        keys = [k for k in a if not ("time" in k or "second" in k or k.endswith("_s"))]
        assert {k: a[k] for k in keys} == {k: b.get(k) for k in keys}

    def test_given_prompts(self) -> None:
        prompts = self.prompts()
        if prompts is None:
            return
        result = self.build().evaluate(self.pipeline(), prompts=list(prompts))
        numbers = _numbers(result)
        assert numbers and all(math.isfinite(v) for v in numbers.values())
