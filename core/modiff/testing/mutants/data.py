"""Mutants of :class:`~modiff.testing.toys.ToyDataset`."""

from __future__ import annotations

import random
from collections.abc import Iterable

import torch

from ...protocols import Example
from ..toys import ToyDataset
from .base import mutant


@mutant("data", "global random state", "test_deterministic_by_index")
class PlacesSquaresWithTheGlobalGenerator(ToyDataset):
    """The square's position is drawn with torch.randint (the global state), not from the index."""

    def __getitem__(self, index: int) -> Example:
        ex = super().__getitem__(index)
        shift = int(torch.randint(0, 2, ()))
        return Example(
            ex.image.roll(shift, dims=-1), ex.caption, None if ex.mask is None else ex.mask.roll(shift, dims=-1)
        )


@mutant("data", "sign or off-by-one", "test_index_out_of_range")
class AcceptsIndexLen(ToyDataset):
    """dataset[len(dataset)] returns an example (the bound check is <= size)."""

    def __getitem__(self, index: int) -> Example:
        return super().__getitem__(index - 1 if index == self.size else index)


@mutant("data", "sign or off-by-one", "test_examples")
class LengthOneTooLong(ToyDataset):
    """__len__ counts one item more than there are."""

    def __len__(self) -> int:
        return self.size + 1


@mutant("data", "wrong range or type", "test_examples")
class ImagesLeftInPixelValues(ToyDataset):
    """Images are left in [0, 255], as PIL gives them, not mapped to [-1, 1]."""

    def __getitem__(self, index: int) -> Example:
        ex = super().__getitem__(index)
        return Example((ex.image + 1) * 127.5, ex.caption, ex.mask)


@mutant("data", "wrong dtype", "test_examples")
class ImagesInFloat64(ToyDataset):
    """Images are float64 (made from a numpy array without a dtype)."""

    def __getitem__(self, index: int) -> Example:
        ex = super().__getitem__(index)
        return Example(ex.image.double(), ex.caption, ex.mask)


@mutant("data", "wrong shape", "test_examples")
class ImagesChannelsLast(ToyDataset):
    """Images are [H, W, 3] (channels last, as PIL and numpy store them)."""

    def __getitem__(self, index: int) -> Example:
        ex = super().__getitem__(index)
        return Example(ex.image.permute(1, 2, 0).contiguous(), ex.caption, ex.mask)


@mutant("data", "sign or off-by-one", "test_examples")
class MaskClassesFromOne(ToyDataset):
    """Mask classes start at 1 (background 1, square 2) while num_classes is 2."""

    def __getitem__(self, index: int) -> Example:
        ex = super().__getitem__(index)
        assert ex.mask is not None
        return Example(ex.image, ex.caption, ex.mask + 1)


@mutant("data", "wrong dtype", "test_examples")
class BoolMasks(ToyDataset):
    """Masks are bool tensors (image > threshold), not int64 class indices."""

    def __getitem__(self, index: int) -> Example:
        ex = super().__getitem__(index)
        assert ex.mask is not None
        return Example(ex.image, ex.caption, ex.mask.bool())


@mutant("data", "state kept between calls", "test_deterministic_by_index")
class OneGeneratorForEveryItem(ToyDataset):
    """One generator, seeded at construction, places every square: an item depends on the
    items read before it."""

    def __init__(self, s):  # type: ignore[no-untyped-def]
        super().__init__(s)
        self.g = torch.Generator().manual_seed(s.seed)

    def __getitem__(self, index: int) -> Example:
        ex = super().__getitem__(index)
        shift = int(torch.randint(0, self.image_size, (), generator=self.g))
        return Example(
            ex.image.roll(shift, dims=-1), ex.caption, None if ex.mask is None else ex.mask.roll(shift, dims=-1)
        )


@mutant("data", "wrong range or type", "test_pickles")
class HoldsALambda(ToyDataset):
    """A transform stored as a lambda: the dataset cannot be pickled for data-loader workers."""

    def __init__(self, s):  # type: ignore[no-untyped-def]
        super().__init__(s)
        self.transform = lambda image: image


@mutant("data", "wrong range or type", "test_corpus_holds_the_examples_captions")
class CorpusOfLabels(ToyDataset):
    """captions() yields the class labels ("red", "green", ...), not the captions the examples carry."""

    def captions(self) -> Iterable[str]:
        return (self[i].caption.split()[1] for i in range(self.size))


@mutant("data", "global random state", "test_caption_corpus")
class ShufflesTheCorpus(ToyDataset):
    """captions() shuffles the corpus with random.shuffle (the global state)."""

    def captions(self) -> Iterable[str]:
        corpus = list(super().captions())
        random.shuffle(corpus)
        return corpus


@mutant("data", "wrong range or type", "test_is_a_dataset")
class OneClassOnly(ToyDataset):
    """num_classes counts the square but not the background."""

    num_classes = 1


@mutant("data", "ignores an input", "test_masks_all_or_none")
class MasksOnlyForRedSquares(ToyDataset):
    """Only some items have a mask (the annotated ones); the others give mask = None."""

    def __getitem__(self, index: int) -> Example:
        ex = super().__getitem__(index)
        return ex if "red" in ex.caption else Example(ex.image, ex.caption, None)
