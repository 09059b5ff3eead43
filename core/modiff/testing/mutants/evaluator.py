"""Mutants of :class:`~modiff.testing.toys.ToyEvaluator`."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from ..toys import COLOURS, ToyEvaluator
from .base import mutant

_DEFAULT = [f"a {c} square" for c in COLOURS]


def _named(prompt: str) -> int | None:
    return next((i for i, c in enumerate(COLOURS) if c in prompt.split()), None)


@mutant("evaluator", "ignores an input", "test_given_prompts")
class IgnoresGivenPrompts(ToyEvaluator):
    """evaluate always scores its own prompts, whatever prompts= says."""

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        return super().evaluate(pipeline)


@mutant("evaluator", "state kept between calls", "test_the_same_evaluator_twice")
class CountsAcrossCalls(ToyEvaluator):
    """Correct answers are counted in self, so a second evaluate() adds to the first."""

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        prompts = list(prompts or _DEFAULT)
        images = pipeline.generate_tensor(prompts, seed=0)
        self.correct = getattr(self, "correct", 0)
        self.total = getattr(self, "total", 0) + len(prompts)
        for prompt, image in zip(prompts, images):
            self.correct += int(_named(prompt) is not None and int(image.mean((1, 2)).argmax()) == _named(prompt))
        return {"accuracy": self.correct / self.total, "num_correct": self.correct, "prompts": len(prompts)}


@mutant("evaluator", "global random state", "test_deterministic")
class SeedFromTheGlobalGenerator(ToyEvaluator):
    """The generation seed is drawn with random.randint (the global state)."""

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        prompts = list(prompts or _DEFAULT)
        images = pipeline.generate_tensor(prompts, seed=random.randint(0, 2**31 - 1))
        return {"brightness": float(images.mean()), "prompts": len(prompts)}


@mutant("evaluator", "wrong range or type", "test_result_is_json")
class AccuracyAsATensor(ToyEvaluator):
    """The accuracy is returned as a torch tensor (a mean left unconverted)."""

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        result = dict(super().evaluate(pipeline, prompts=prompts))
        result["accuracy"] = torch.tensor(result["accuracy"])
        return result


@mutant("evaluator", "sign or off-by-one", "test_fractions_lie_in_the_unit_interval")
class DividesByOneTooFew(ToyEvaluator):
    """The accuracy is divided by len(prompts) - 1."""

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        result = dict(super().evaluate(pipeline, prompts=prompts))
        n = result["prompts"]
        result["accuracy"] = result["accuracy"] * n / max(1, n - 1)
        return result


@mutant("evaluator", "wrong range or type", "test_prompts_it_cannot_use")
class ScoresOnlyRecognisedPrompts(ToyEvaluator):
    """The accuracy is over the prompts that name a colour: none of them is a ZeroDivisionError."""

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        prompts = list(prompts or _DEFAULT)
        images = pipeline.generate_tensor(prompts, seed=0)
        named = [(_named(p), im) for p, im in zip(prompts, images) if _named(p) is not None]
        correct = sum(int(int(im.mean((1, 2)).argmax()) == k) for k, im in named)
        return {"accuracy": correct / len(named), "prompts": len(prompts)}


@mutant("evaluator", "state kept between calls", "test_returns_finite_numbers")
class SetsPipelineOptions(ToyEvaluator):
    """evaluate sets pipeline.sample_steps = 5 to be fast, reconfiguring the user's pipeline."""

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        pipeline.sample_steps = 5
        return super().evaluate(pipeline, prompts=prompts)


@mutant("evaluator", "modifies its input", "test_given_prompts")
class SortsThePromptsInPlace(ToyEvaluator):
    """The caller's prompt list is sorted in place (prompts.sort()) to batch similar prompts."""

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        if isinstance(prompts, list):
            prompts.sort()
        return super().evaluate(pipeline, prompts=prompts)


@mutant("evaluator", "wrong range or type", "test_returns_finite_numbers")
class NumbersUnderIntegerKeys(ToyEvaluator):
    """Per-colour accuracies are reported under the colour's index (an int key)."""

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        result: dict[Any, Any] = dict(super().evaluate(pipeline, prompts=prompts))
        for i in range(len(COLOURS)):
            result[i] = result["accuracy"]
        return result
