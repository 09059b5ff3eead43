"""Skeleton of an evaluator: image statistics and prompt sensitivity."""

from __future__ import annotations

from . import RoleTemplate

SETTINGS = r'''"""Settings of ``$name`` (pydantic only: ``modiff plugins`` imports this module)."""

from __future__ import annotations

from pydantic import Field

import modiff


class $settings_class(modiff.ComponentSettings):
    """The keys an ``[evaluator]`` table with ``plugin = "$name"`` accepts."""

    prompts: list[str] = Field(
        default_factory=list, description="Prompts to generate; default: the first distinct captions of the dataset."
    )
    num_prompts: int = Field(8, ge=2, description="How many dataset captions to use when prompts is empty.")
    seed: int = Field(0, description="Seed of the generated images.")
    steps: int | None = Field(None, ge=1, description="Sampler steps; default: the run's [sample] steps.")
'''

COMPONENT = r'''"""Numbers any text-to-image pipeline can be held to, without a classifier.

It generates one image per prompt and reports:

* ``mean`` and ``std`` of the pixel values (a collapsed model gives a flat grey);
* ``out_of_range``: the fraction of pixel values outside [-1, 1] before
  clamping (a sampler or a scaling that diverges shows up here first);
* ``prompt_sensitivity``: the mean distance between the images of two
  different prompts, relative to the images' spread (0 means the model
  ignores the prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

import modiff

from .settings import $settings_class


class ImageStats:
    def __init__(self, settings: $settings_class, default_prompts: Sequence[str]):
        self.prompts = list(settings.prompts) or list(default_prompts)
        self.seed = settings.seed
        self.steps = settings.steps

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        chosen = list(prompts) if prompts else self.prompts
        if len(chosen) < 2:
            raise modiff.ModiffError(
                "the evaluator $name needs at least two prompts: set [evaluator] prompts, or configure a [data] "
                "plugin whose captions can be used"
            )
        options: dict[str, Any] = {"seed": self.seed}
        if self.steps is not None:
            options["steps"] = self.steps
        images = pipeline.generate_tensor(chosen, **options).float()  # [N, 3, H, W], not clamped
        flat = images.flatten(1)
        spread = float(flat.std()) or 1.0
        distances = (flat[:, None] - flat[None, :]).pow(2).mean(-1).sqrt()  # [N, N] RMS difference per pixel
        n = len(chosen)
        off_diagonal = distances[~torch.eye(n, dtype=torch.bool)]
        return {
            "mean": float(images.mean()),
            "std": float(images.std()),
            "out_of_range": float((images.abs() > 1).float().mean()),
            "prompt_sensitivity": float(off_diagonal.mean()) / spread,
            "num_prompts": n,
        }


def dataset_prompts(context: modiff.BuildContext, count: int) -> list[str]:
    """The first ``count`` distinct captions of the run's dataset, if it has one."""
    if context.dataset is None:
        return []
    seen: dict[str, None] = {}
    for caption in context.dataset.captions():
        seen.setdefault(caption)
        if len(seen) >= count:
            break
    return list(seen)


def build_component(settings: $settings_class, context: modiff.BuildContext) -> ImageStats:
    return ImageStats(settings, dataset_prompts(context, settings.num_prompts))
'''

TESTS = r'''

class PromptPipeline:
    """Stands in for ``modiff.Pipeline``: each prompt's image is a fixed
    function of the prompt (a perfectly prompt-sensitive model)."""

    def generate_tensor(self, prompts: list[str], *, seed: int = 0, **options: Any) -> torch.Tensor:
        images = []
        for p in prompts:
            g = torch.Generator().manual_seed(sum(map(ord, p)) + seed)
            images.append(torch.rand(3, 8, 8, generator=g) * 2 - 1)
        return torch.stack(images)


class DeafPipeline:
    """Draws the same image whatever the prompt."""

    def generate_tensor(self, prompts: list[str], *, seed: int = 0, **options: Any) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return (torch.rand(3, 8, 8, generator=g) * 2 - 1).expand(len(prompts), 3, 8, 8).clone()


class $test_class($contract):
    plugin = "$name"
    settings: ClassVar[dict[str, Any]] = {"prompts": ["a red circle", "a blue square", "a green triangle"]}

    def registry(self) -> modiff.Registry:
        return REGISTRY

    def pipeline(self) -> Any:
        return PromptPipeline()

    def prompts(self) -> list[str]:
        return ["one prompt", "another prompt"]


def test_prompt_sensitivity_tells_a_deaf_model() -> None:
    evaluator = ${test_class}().build()
    listening = evaluator.evaluate(PromptPipeline())
    deaf = evaluator.evaluate(DeafPipeline())
    assert listening["prompt_sensitivity"] > 1.0
    assert deaf["prompt_sensitivity"] == 0.0
    assert listening["out_of_range"] == 0.0 and listening["num_prompts"] == 3


def test_one_prompt_is_a_clear_error() -> None:
    with pytest.raises(modiff.ModiffError, match="at least two prompts"):
        ${test_class}().build().evaluate(PromptPipeline(), prompts=["alone"])
'''

TEMPLATE = RoleTemplate(
    role="evaluator",
    hook="register_evaluators",
    contract="EvaluatorContract",
    summary="image statistics and how much the images depend on the prompt",
    settings_class="ImageStatsSettings",
    settings=SETTINGS,
    component=COMPONENT,
    tests=TESTS,
    test_imports=("import pytest", "import torch"),
)
