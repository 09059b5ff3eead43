"""``digits``: the real 8x8 digits, upscaled and captioned."""

from __future__ import annotations

import random

import numpy as np
import torch

import modiff
from modiff.protocols import Example

from .data import TEMPLATES, caption, real_digits, split, upscale
from .settings import DigitsSettings


class DigitsDataset:
    """Example ``i`` is a digit of the chosen split, upscaled to ``image_size``,
    captioned from one of :data:`~modiff_digits.data.TEMPLATES` picked by
    ``(seed, i)``. Only the 8x8 originals are kept (about 100 kB), so
    pickling to data-loader workers is cheap; upscaling happens per item."""

    num_classes = 0  # no segmentation masks

    def __init__(self, settings: DigitsSettings):
        images, labels = real_digits()
        train, holdout = split(labels, settings.holdout_fraction, settings.seed)
        chosen = {"train": train, "holdout": holdout, "all": np.arange(len(labels))}[settings.split]
        if len(chosen) == 0:
            raise modiff.ModiffError(
                f"the digits split {settings.split!r} is empty with holdout_fraction = {settings.holdout_fraction}; "
                "raise holdout_fraction or use split = \"train\""
            )
        self.image_size = settings.image_size
        self.seed = settings.seed
        self.split = settings.split
        self.images = np.ascontiguousarray(images[chosen])
        self.labels = np.ascontiguousarray(labels[chosen])

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def caption(self, index: int) -> str:
        template = random.Random(f"{self.seed}/{index}").randrange(len(TEMPLATES))
        return caption(self.label(index), template)

    def __getitem__(self, index: int) -> Example:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index out of range: the {self.split} split has {n} digits")
        image = upscale(torch.from_numpy(self.images[index : index + 1].copy()), self.image_size)[0]
        return Example(image, self.caption(index))

    def captions(self) -> list[str]:
        return [self.caption(i) for i in range(len(self))]
