"""``digit-accuracy``: is the generated digit the one the prompt asked for?

A logistic-regression classifier is trained on real digits (a fixed 80 % of
them) exactly as a generated image will reach it: upscaled to the pipeline's
image size like the dataset does, then averaged back down to 8x8. Its
accuracy on the other 20 % is reported as ``classifier_accuracy`` (the
instrument's own error, about 0.97). Training takes a fraction of a second
and is deterministic; it happens once per process and image size, when the
evaluator is built (for the run's image size) or when images of another
size arrive.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import modiff

from .data import WORDS, parse_digit, real_digits, split, to_8x8, upscale
from .settings import DigitAccuracySettings

#: The classifier's own split of the real digits (fixed: the instrument must not move).
CLASSIFIER_HOLDOUT, CLASSIFIER_SEED = 0.2, 1234


class DigitClassifier:
    """Logistic regression on 8x8 ink maps, trained for one image size."""

    def __init__(self, image_size: int, c: float = 1.0):
        from sklearn.linear_model import LogisticRegression

        images, labels = real_digits()
        train, holdout = split(labels, CLASSIFIER_HOLDOUT, CLASSIFIER_SEED)
        x = to_8x8(upscale(torch.from_numpy(images.copy()), image_size)) / 16.0  # ink in [0, 1]: fast lbfgs
        self.model = LogisticRegression(C=c, max_iter=2000)
        self.model.fit(x[train], labels[train])
        self.accuracy = float(self.model.score(x[holdout], labels[holdout]))
        self.image_size = image_size

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """``[N, 10]`` class probabilities for ``[N, 3, H, W]`` images in [-1, 1]."""
        return self.model.predict_proba(to_8x8(images) / 16.0)


@functools.cache
def classifier_for(image_size: int, c: float) -> DigitClassifier:
    """One classifier per image size and regularisation, per process: the
    instrument is the same for every evaluator that asks for it."""
    return DigitClassifier(image_size, c)


class DigitAccuracy:
    def __init__(self, settings: DigitAccuracySettings, image_size: int | None = None):
        self.settings = settings
        if image_size is not None:
            self.classifier(image_size)

    def classifier(self, image_size: int) -> DigitClassifier:
        return classifier_for(image_size, self.settings.classifier_c)

    def default_prompts(self) -> list[str]:
        s = self.settings
        return [s.template.format(word=WORDS[d], digit=d) for d in range(10) for _ in range(s.samples_per_digit)]

    def evaluate(self, pipeline: modiff.GeneratingPipeline, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        s = self.settings
        asked = list(prompts) if prompts else self.default_prompts()
        targets = [parse_digit(p) for p in asked]
        kept = [(p, d) for p, d in zip(asked, targets) if d is not None]
        if not kept:
            raise modiff.ModiffError(
                "digit-accuracy: none of the prompts names exactly one digit (e.g. \"a handwritten seven\" "
                "or \"the digit 7\"); give such prompts or leave them out to use the template"
            )
        options: dict[str, Any] = {"seed": s.seed}
        for key in ("steps", "guidance", "batch_size"):
            if getattr(s, key) is not None:
                options[key] = getattr(s, key)
        images = pipeline.generate_tensor([p for p, _ in kept], **options)
        if images.dim() != 4 or images.shape[0] != len(kept):
            raise ValueError(f"the pipeline returned images of shape {tuple(images.shape)} for {len(kept)} prompts")
        clf = self.classifier(int(images.shape[-1]))
        probs = clf.probabilities(images)
        want = np.array([d for _, d in kept])
        predicted = probs.argmax(1)
        correct = predicted == want
        result: dict[str, Any] = {
            "accuracy": float(correct.mean()),
            "mean_confidence": float(probs[np.arange(len(want)), want].mean()),
            "classifier_accuracy": clf.accuracy,
            "num_images": len(kept),
            "num_unparsed": len(asked) - len(kept),
        }
        per_digit: dict[str, float] = {}
        for digit in sorted(set(want.tolist())):
            acc = float(correct[want == digit].mean())
            per_digit[str(digit)] = acc
            result[f"accuracy_{digit}"] = acc
        result["per_digit"] = per_digit
        result["predicted"] = predicted.tolist()
        return result
