"""The shapes world as a modiff dataset (the torch side)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

import modiff

from ..config import ShapesSettings
from .drawing import render
from .sampler import Scene, SceneSampler
from .world import NUM_CLASSES

_LEVELS = (np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)).astype(np.float32)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 to ``[3, H, W]`` float32 in ``[-1, 1]`` (0 -> -1, 255 -> 1).

    A 256-entry lookup in numpy: several times faster than torch's elementwise
    ops on one small image, which matters when every example is made on the fly.
    """
    return torch.from_numpy(np.ascontiguousarray(_LEVELS[rgb.transpose(2, 0, 1)]))


#: Third entry of the noise generator's seed, so the noise stream of ``(seed, i)``
#: is independent of the scene drawn from ``(seed, i)``.
NOISE_STREAM = 1


def add_noise(image: torch.Tensor, std: float, seed: int, index: int) -> torch.Tensor:
    """``image`` plus Gaussian noise of ``std``, clipped to ``[-1, 1]``; the noise
    is a pure function of ``(seed, index)`` (numpy, so any process draws the same)."""
    rng = np.random.default_rng([seed, index, NOISE_STREAM])
    noise = rng.standard_normal(tuple(image.shape), dtype=np.float32) * np.float32(std)
    return torch.from_numpy(np.clip(image.numpy() + noise, -1.0, 1.0))


class ShapesDataset:
    """Procedural coloured shapes on black, with captions and masks.

    ``dataset[i]`` is a pure function of ``(seed, i)`` and the settings;
    nothing is stored, so any ``size`` costs no memory and works the same in
    data-loader worker processes.

    Attributes:
        holdout: the held-out ``"colour shape"`` pairs (the prompt-accuracy
            evaluator reads them to score unseen combinations).
    """

    num_classes = NUM_CLASSES

    def __init__(self, settings: ShapesSettings) -> None:
        self.settings = settings
        self.sampler = SceneSampler(
            seed=settings.seed,
            image_size=settings.image_size,
            max_objects=settings.max_objects,
            holdout=settings.holdout,
            object_weights=settings.object_weights,
            overlap=settings.overlap,
            unsized=settings.unsized,
            jitter=settings.jitter,
            unplaced=settings.unplaced,
        )
        self.image_size = settings.image_size
        self.size = settings.size
        self.max_objects = settings.max_objects
        self.holdout: tuple[str, ...] = self.sampler.holdout

    def __len__(self) -> int:
        return self.size

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(f"index {index} is out of range for a shapes dataset of size {self.size}")
        return i

    def scene(self, index: int) -> Scene:
        """The structured description of example ``index`` (objects with
        exact positions, caption)."""
        return self.sampler.scene(self._index(index))

    def __getitem__(self, index: int) -> modiff.Example:
        i = self._index(index)
        scene = self.sampler.scene(i)
        rgb, mask = render(scene.objects, self.image_size, overlap=self.settings.overlap)
        image = to_tensor(rgb)
        if self.settings.noise > 0:
            image = add_noise(image, self.settings.noise, self.settings.seed, i)
        return modiff.Example(image=image, caption=scene.caption, mask=torch.from_numpy(mask))

    def captions(self) -> Iterator[str]:
        """The caption corpus: the captions of examples ``0..n-1`` in order,
        where ``n`` is ``corpus_size`` (default: the whole epoch). Computed
        without drawing anything (about 20 µs each)."""
        n = self.size if self.settings.corpus_size is None else min(self.settings.corpus_size, self.size)
        for i in range(n):
            yield self.sampler.caption(i)

    def __repr__(self) -> str:
        s = self.settings
        extra = (", overlap=True" if s.overlap else "") + (f", noise={s.noise}" if s.noise else "")
        return (
            f"ShapesDataset(size={s.size}, image_size={s.image_size}, max_objects={s.max_objects}, "
            f"holdout={list(self.holdout)}, seed={s.seed}{extra})"
        )
