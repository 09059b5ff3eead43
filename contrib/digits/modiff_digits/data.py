"""The real digits, their split, their words, and the two image conversions
the dataset and the evaluator share.

scikit-learn ships the 1,797 8x8 handwritten digits of the UCI "optical
recognition" set inside the package (``sklearn.datasets.load_digits``), so
nothing is downloaded. Pixel values are ink counts 0..16.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import torch
import torch.nn.functional as F

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_WORD_TO_DIGIT = {word: digit for digit, word in enumerate(WORDS)}

#: Caption templates; ``{word}`` is the digit's name, ``{digit}`` its numeral.
TEMPLATES = (
    "a handwritten {word}",
    "the digit {digit}",
    "a handwritten digit {word}",
    "the number {word}",
    "a {word}, written by hand",
    "handwritten {digit}",
)


@functools.cache
def real_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images [1797, 8, 8] uint8 in 0..16, labels [1797] int64)``, read once per process."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.uint8)
    images.setflags(write=False)
    labels = np.asarray(bunch.target, dtype=np.int64)
    labels.setflags(write=False)
    return images, labels


def split(labels: np.ndarray, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, holdout)`` indices, stratified: each digit keeps the same share in both."""
    rng = np.random.default_rng(seed)
    train, holdout = [], []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        members = members[rng.permutation(len(members))]
        k = int(round(holdout_fraction * len(members)))
        holdout.append(members[:k])
        train.append(members[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(holdout))


def upscale(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 8, 8]`` ink counts 0..16 -> ``[N, 3, size, size]`` in [-1, 1]:
    bilinear upscaling, white ink on black, the grey copied to R, G and B."""
    x = images.to(torch.float32)[:, None] / 16.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x.clamp(0.0, 1.0) * 2 - 1).expand(-1, 3, -1, -1).contiguous()


def to_8x8(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` images in [-1, 1] (any size) -> ``[N, 64]`` on the 0..16 ink scale:
    the channels' mean, clamped, area-averaged down to 8x8 (what the classifier reads)."""
    grey = images.detach().to("cpu", torch.float32).mean(1, keepdim=True).clamp(-1.0, 1.0)
    small = F.adaptive_avg_pool2d(grey, 8)
    return ((small + 1.0) * 8.0).flatten(1).numpy().astype(np.float64)


def parse_digit(prompt: str) -> int | None:
    """The one digit a prompt names ("a handwritten seven", "the digit 7"), else None
    (no digit, or more than one)."""
    tokens = re.findall(r"[a-z]+|\d+", prompt.lower())
    found = {_WORD_TO_DIGIT[t] for t in tokens if t in _WORD_TO_DIGIT}
    found |= {int(t) for t in tokens if t.isdigit() and len(t) == 1}
    if any(t.isdigit() and len(t) > 1 for t in tokens):
        return None  # "17" names no single digit
    return found.pop() if len(found) == 1 else None


def caption(digit: int, template: int) -> str:
    return TEMPLATES[template % len(TEMPLATES)].format(word=WORDS[digit], digit=digit)
