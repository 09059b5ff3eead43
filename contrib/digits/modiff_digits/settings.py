"""Settings of ``digits`` and ``digit-accuracy`` (pydantic only: ``modiff plugins`` imports this module)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import modiff


class DigitsSettings(modiff.ComponentSettings):
    """The keys a ``[data]`` table with ``plugin = "digits"`` accepts."""

    image_size: Literal[16, 32, 64] = Field(32, description="Side of the images the 8x8 digits are upscaled to.")
    split: Literal["train", "holdout", "all"] = Field(
        "train", description="Which part of the 1,797 digits: the training part, the held-out part, or all."
    )
    holdout_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Fraction of each digit's images held out (never in the train split)."
    )
    seed: int = Field(0, description="Seed of the split and of the caption templates.")


class DigitAccuracySettings(modiff.ComponentSettings):
    """The keys an ``[evaluator]`` table with ``plugin = "digit-accuracy"`` accepts."""

    samples_per_digit: int = Field(4, ge=1, description="Images generated per digit when no prompts are given.")
    template: str = Field(
        "a handwritten {word}",
        description='Prompt for each digit when no prompts are given; "{word}" is the digit\'s name, '
        '"{digit}" its numeral.',
    )
    seed: int = Field(0, description="Seed of the generated images.")
    steps: int | None = Field(None, ge=1, description="Sampler steps; default: the run's [sample] steps.")
    guidance: float | None = Field(None, ge=0, description="Guidance scale; default: the run's [sample] guidance.")
    batch_size: int | None = Field(None, ge=1, description="Images generated at once; default: all.")
    classifier_c: float = Field(
        10.0, gt=0, description="Inverse regularisation strength of the logistic-regression classifier."
    )
