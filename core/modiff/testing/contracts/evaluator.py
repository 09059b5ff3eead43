"""Contract for :class:`modiff.protocols.Evaluator`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest

from ...errors import ModiffError
from ...protocols import Evaluator
from .base import Contract
from .checks import global_random_state_unchanged

#: Metric names that end like this are fractions: they lie in [0, 1].
FRACTION_SUFFIXES = ("accuracy", "_fraction", "_rate")


def _numbers(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _strings(value: Any) -> list[str]:
    """The prompts in an argument: a string, or a sequence of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return []


class RecordingPipeline:
    """Wraps the stand-in pipeline: records the prompts its methods receive, and refuses
    attribute assignments (an evaluator must not reconfigure the pipeline it is given)."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "prompts_seen", [])

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            for arg in (*args, *kwargs.values()):
                self.prompts_seen.extend(_strings(arg))
            return value(*args, **kwargs)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        raise AssertionError(
            f"the evaluator set pipeline.{name} = {value!r}: evaluators must not reconfigure the pipeline "
            "they evaluate (the next evaluation, or the user's generation, would see it); pass options to its methods"
        )


class EvaluatorContract(Contract):
    """Every evaluator: returns finite numbers for a pipeline, the same ones for the
    same (deterministic) pipeline and the same ones when called twice, numbers that
    JSON can write, fractions in [0, 1], honours ``prompts=`` (asks the pipeline for
    those prompts and no others, and leaves the list as it was), copes with prompts it
    cannot use, and never reconfigures the pipeline.

    Override ``pipeline()`` to return a (tiny) :class:`modiff.Pipeline` or a
    stand-in with the methods your evaluator calls, and ``prompts()`` to give
    a few prompts your evaluator understands (``None`` skips those tests).
    ``unusable_prompts`` are prompts it cannot score: the evaluator either
    returns finite numbers or raises a clear error (:class:`modiff.ModiffError`
    or ``ValueError``).
    """

    role: ClassVar[str] = "evaluator"
    unusable_prompts: ClassVar[tuple[str, ...]] = ("", "zzz qqq")

    def pipeline(self) -> Any:
        raise NotImplementedError("override pipeline() to give the evaluator something to evaluate")

    def prompts(self) -> Sequence[str] | None:
        """A few prompts for ``evaluate(..., prompts=...)``; ``None`` to skip."""
        return None

    def evaluate(self, evaluator: Any, **kwargs: Any) -> Mapping[str, Any]:
        """``evaluator.evaluate`` on a fresh, recording :meth:`pipeline`."""
        return evaluator.evaluate(RecordingPipeline(self.pipeline()), **kwargs)

    def test_is_an_evaluator(self) -> None:
        assert isinstance(self.build(), Evaluator)

    def test_returns_finite_numbers(self) -> None:
        result = self.evaluate(self.build())
        assert isinstance(result, Mapping) and result, "an evaluator must report at least one number"
        assert all(isinstance(k, str) for k in result), f"keys must be strings: {list(result)}"
        numbers = _numbers(result)
        assert numbers, "an evaluator must report at least one number"
        for key, value in numbers.items():
            assert math.isfinite(value), f"{key} = {value}"

    def test_result_is_json(self) -> None:
        """The result is written to ``evaluation.json``: plain numbers, strings, lists and
        dicts (not tensors or numpy scalars)."""
        result = self.evaluate(self.build())
        try:
            json.dumps(dict(result))
        except TypeError as exc:
            raise AssertionError(f"the result cannot be written as JSON: {exc}") from exc

    def test_fractions_lie_in_the_unit_interval(self) -> None:
        """Numbers named ``*accuracy``, ``*_fraction`` or ``*_rate`` are fractions."""
        for key, value in _numbers(self.evaluate(self.build())).items():
            if key.endswith(FRACTION_SUFFIXES):
                assert 0.0 <= value <= 1.0, f"{key} = {value} is not a fraction in [0, 1]"

    def test_deterministic(self) -> None:
        """Same settings, same deterministic pipeline: same numbers, whatever the global
        random state. Timings (names with "time" or "second", or ending in "_s") are excluded."""
        import torch

        first, second = self.build(), self.build()
        torch.manual_seed(1)
        a = _numbers(self.evaluate(first))
        torch.manual_seed(2)
        with global_random_state_unchanged("evaluate"):
            b = _numbers(self.evaluate(second))
        keys = [k for k in a if not ("time" in k or "second" in k or k.endswith("_s"))]
        assert {k: a[k] for k in keys} == {k: b.get(k) for k in keys}

    def test_the_same_evaluator_twice(self) -> None:
        """An evaluator keeps no state between calls that changes its numbers."""
        e = self.build()
        a, b = _numbers(self.evaluate(e)), _numbers(self.evaluate(e))
        keys = [k for k in a if not ("time" in k or "second" in k or k.endswith("_s"))]
        assert {k: a[k] for k in keys} == {k: b.get(k) for k in keys}, "a second evaluate() gave other numbers"

    def test_given_prompts(self) -> None:
        """``prompts=`` is honoured: the pipeline is asked for those prompts and no others,
        the numbers are finite, and the caller's list is left as it was."""
        prompts = self.prompts()
        if prompts is None:
            pytest.skip("prompts() is None: this evaluator's test gives no prompts it understands")
        given = list(prompts)
        pipeline = RecordingPipeline(self.pipeline())
        result = self.build().evaluate(pipeline, prompts=given)
        assert given == list(prompts), "evaluate() modified the list of prompts it was given"
        numbers = _numbers(result)
        assert numbers and all(math.isfinite(v) for v in numbers.values())
        seen = set(pipeline.prompts_seen)
        assert seen, "the pipeline was never asked for the given prompts"
        others = sorted(seen - set(prompts))
        assert not others, f"with prompts= given, the pipeline was also asked for {others[:5]}"

    def test_prompts_it_cannot_use(self) -> None:
        """Prompts the evaluator cannot score give finite numbers or a clear error, never a crash."""
        try:
            result = self.evaluate(self.build(), prompts=list(self.unusable_prompts))
        except (ModiffError, ValueError) as exc:
            assert str(exc), "the error must say what is wrong with the prompts"
        else:
            numbers = _numbers(result)
            assert all(math.isfinite(v) for v in numbers.values()), f"non-finite numbers: {numbers}"
