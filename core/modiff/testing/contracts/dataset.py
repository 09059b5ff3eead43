"""Contract for :class:`modiff.protocols.Dataset`."""

from __future__ import annotations

import pickle
import random
from typing import ClassVar

import numpy as np
import torch

from ...protocols import Dataset, Example
from .base import Contract


class DatasetContract(Contract):
    """Every dataset: example types and ranges, determinism by index, a caption
    corpus, Python's indexing protocol, and survival of pickling (data-loader
    worker processes receive the dataset pickled).

    ``examples_checked`` bounds how many items the per-item tests read. Set
    ``corpus_has_every_caption = False`` when the settings make ``captions()``
    a sample of the dataset's captions (then only the first item's is looked for).
    """

    role: ClassVar[str] = "data"
    examples_checked: ClassVar[int] = 4
    corpus_has_every_caption: ClassVar[bool] = True

    def _indices(self, d: Dataset) -> list[int]:
        n = len(d)
        return sorted({*range(min(self.examples_checked, n)), n - 1})

    def test_is_a_dataset(self) -> None:
        d = self.build()
        assert isinstance(d, Dataset)
        assert len(d) > 0 and d.image_size > 0
        assert d.num_classes == 0 or d.num_classes >= 2, "num_classes counts the background: 0 or at least 2"

    def test_examples(self) -> None:
        d = self.build()
        for i in self._indices(d):
            ex = d[i]
            assert isinstance(ex, Example) and isinstance(ex.caption, str)
            assert ex.image.shape == (3, d.image_size, d.image_size) and ex.image.dtype == torch.float32
            assert bool(torch.isfinite(ex.image).all())
            assert float(ex.image.min()) >= -1.0 and float(ex.image.max()) <= 1.0
            if ex.mask is not None:
                assert ex.mask.shape == (d.image_size, d.image_size) and ex.mask.dtype == torch.int64
                assert int(ex.mask.min()) >= 0 and int(ex.mask.max()) < max(d.num_classes, 1)

    def test_masks_all_or_none(self) -> None:
        # A batch is collated with masks for every example or for none.
        d = self.build()
        has_mask = {d[i].mask is not None for i in self._indices(d)}
        assert len(has_mask) == 1, "some examples have masks and others not"
        if has_mask == {True}:
            assert d.num_classes >= 2, "a dataset with masks must say how many classes they use"

    def test_deterministic_by_index(self) -> None:
        a, b = self.build(), self.build()
        for i in (0, len(a) - 1):
            ea, eb = a[i], b[i]
            assert torch.equal(ea.image, eb.image) and ea.caption == eb.caption
            assert (ea.mask is None) == (eb.mask is None)
            if ea.mask is not None:
                assert torch.equal(ea.mask, eb.mask)
        # reading other items in between changes nothing
        first = a[0]
        _ = a[len(a) - 1]
        assert torch.equal(a[0].image, first.image)

    def test_index_out_of_range(self) -> None:
        # IndexError is what ends Python's legacy iteration and what samplers expect.
        d = self.build()
        try:
            d[len(d)]
        except IndexError:
            pass
        else:
            raise AssertionError("dataset[len(dataset)] must raise IndexError")

    def test_caption_corpus(self) -> None:
        """The corpus is the same whatever state Python's, NumPy's and torch's global
        generators are in: a text embedder fitted on it must come out the same in every
        process. Read under several seeded global states (and the states put back after),
        so that a corpus drawn from a global generator is caught whatever ran before."""
        captions = list(self.build().captions())
        assert captions and all(isinstance(c, str) for c in captions)
        python, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
        try:
            for seed in range(4):
                random.seed(seed)
                np.random.seed(seed)
                torch.manual_seed(seed)
                again = list(self.build().captions())
                assert captions == again, (
                    f"the caption corpus must be deterministic: it changed with the global random state (seed {seed})")
        finally:
            random.setstate(python)
            np.random.set_state(numpy_state)
            torch.random.set_rng_state(torch_state)

    def test_corpus_holds_the_examples_captions(self) -> None:
        """A text embedder fitted on ``captions()`` must know the words of the captions it
        will be given: the captions of the first and the last items are in the corpus."""
        d = self.build()
        corpus = set(d.captions())
        indices = self._indices(d) if self.corpus_has_every_caption else [0]
        missing = [i for i in indices if d[i].caption not in corpus]
        assert not missing, f"captions of items {missing} are not in captions() (e.g. {d[missing[0]].caption!r})"

    def test_pickles(self) -> None:
        d = self.build()
        copy = pickle.loads(pickle.dumps(d))
        assert len(copy) == len(d)
        a, b = d[0], copy[0]
        assert torch.equal(a.image, b.image) and a.caption == b.caption
