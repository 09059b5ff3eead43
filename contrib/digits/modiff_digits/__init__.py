"""modiff-digits: real handwritten digits, and whether generated ones are right.

* ``[data] plugin = "digits"``: scikit-learn's bundled 1,797 8x8 digits (no
  download), upscaled to 16, 32 or 64 pixels, captioned "a handwritten
  seven", "the digit 7", ...; a stratified train/holdout split.
* ``[evaluator] plugin = "digit-accuracy"``: generates digits from prompts and
  classifies them with a classifier trained on the real ones.

torch and scikit-learn are imported inside the factories, so listing plugins
stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .settings import DigitAccuracySettings, DigitsSettings

__version__ = "0.1.0"


def build_dataset(settings: DigitsSettings, context: modiff.BuildContext) -> Any:
    """Real 8x8 handwritten digits (scikit-learn), upscaled and captioned."""
    from .dataset import DigitsDataset

    return DigitsDataset(settings)


def build_evaluator(settings: DigitAccuracySettings, context: modiff.BuildContext) -> Any:
    """Fraction of generated digits a classifier trained on real ones reads as the prompted digit."""
    from .evaluator import DigitAccuracy

    try:
        image_size: int | None = context.image_size
    except modiff.ModiffError:  # no dataset and no [run] image_size: train when images arrive
        image_size = None
    return DigitAccuracy(settings, image_size)


@modiff.hookimpl
def register_datasets(register: modiff.Register) -> None:
    register("digits", build_dataset, DigitsSettings)


@modiff.hookimpl
def register_evaluators(register: modiff.Register) -> None:
    register("digit-accuracy", build_evaluator, DigitAccuracySettings)


__all__ = ["DigitAccuracySettings", "DigitsSettings", "build_dataset", "build_evaluator"]
