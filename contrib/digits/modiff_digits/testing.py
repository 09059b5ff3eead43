"""Stand-in pipelines with known answers, for testing digit evaluators.

Nothing in the plugin imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .data import parse_digit, real_digits, split, upscale


class TruthPipeline:
    """Stands in for ``modiff.Pipeline``: for each prompt, a real digit of the
    prompted class (from the held-out part of a split), or of the next class
    when ``shift = 1`` (a model that is always wrong). Records its calls."""

    def __init__(self, image_size: int = 32, shift: int = 0, holdout_fraction: float = 0.2, seed: int = 0):
        images, labels = real_digits()
        _, holdout = split(labels, holdout_fraction, seed)
        self.images, self.labels = images[holdout], labels[holdout]
        self.image_size = image_size
        self.shift = shift
        self.calls: list[dict[str, Any]] = []

    def generate_tensor(self, prompts: Sequence[str], *, seed: int = 0, **options: Any) -> torch.Tensor:
        self.calls.append({"n": len(prompts), "seed": seed, **options})
        out = []
        for i, prompt in enumerate(prompts):
            digit = parse_digit(prompt)
            digit = 0 if digit is None else (digit + self.shift) % 10
            members = np.flatnonzero(self.labels == digit)
            pick = members[(seed + i) % len(members)]
            out.append(torch.from_numpy(self.images[pick].copy()))
        return upscale(torch.stack(out), self.image_size)


class BlankPipeline:
    """Draws black images whatever the prompt."""

    def __init__(self, image_size: int = 32):
        self.image_size = image_size

    def generate_tensor(self, prompts: Sequence[str], *, seed: int = 0, **options: Any) -> torch.Tensor:
        return torch.full((len(prompts), 3, self.image_size, self.image_size), -1.0)
