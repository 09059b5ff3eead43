"""Contract for :class:`modiff.protocols.Dataset`."""

from __future__ import annotations

from typing import ClassVar

import torch

from ...protocols import Dataset, Example
from .base import Contract


class DatasetContract(Contract):
    """Every dataset: example types and ranges, determinism by index, a caption corpus."""

    role: ClassVar[str] = "data"

    def test_is_a_dataset(self) -> None:
        d = self.build()
        assert isinstance(d, Dataset)
        assert len(d) > 0 and d.image_size > 0

    def test_examples(self) -> None:
        d = self.build()
        for i in range(min(4, len(d))):
            ex = d[i]
            assert isinstance(ex, Example) and isinstance(ex.caption, str)
            assert ex.image.shape == (3, d.image_size, d.image_size) and ex.image.dtype == torch.float32
            assert float(ex.image.min()) >= -1.0 and float(ex.image.max()) <= 1.0
            if ex.mask is not None:
                assert ex.mask.shape == (d.image_size, d.image_size) and ex.mask.dtype == torch.int64
                assert int(ex.mask.min()) >= 0 and int(ex.mask.max()) < max(d.num_classes, 1)

    def test_deterministic_by_index(self) -> None:
        a, b = self.build(), self.build()
        for i in (0, len(a) - 1):
            assert torch.equal(a[i].image, b[i].image) and a[i].caption == b[i].caption

    def test_caption_corpus(self) -> None:
        captions = list(self.build().captions())
        assert captions and all(isinstance(c, str) for c in captions)
