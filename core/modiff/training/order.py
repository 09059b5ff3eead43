"""What a training step sees: its examples and its seed, pure functions of
``(seed, stage, step)``.

Because nothing depends on the run's history, a resumed run sees exactly the
data and draws an uninterrupted one would, and N processes take disjoint
shares of the same global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..distributed import World
from ..protocols import Batch

MAX_SEED = 2**63 - 1
_FNV_OFFSET = 1469598103934665603
_FNV_PRIME = 1099511628211


def step_seed(seed: int, stage: str, step: int) -> int:
    """A seed for everything random at ``step`` of ``stage``, independent of history.

    The 64-bit FNV-1a hash of the three parts, each followed by a 0xFF
    separator byte (which cannot occur in UTF-8, so ``("a", "bc")`` and
    ``("ab", "c")`` differ), reduced to a non-negative int64.
    """
    h = _FNV_OFFSET
    for part in (str(seed), stage, str(step)):
        for byte in part.encode():
            h = ((h ^ byte) * _FNV_PRIME) % 2**64
        h = ((h ^ 0xFF) * _FNV_PRIME) % 2**64
    return h % MAX_SEED


def batch_indices(seed: int, stage: str, step: int, batch_size: int, size: int, world: World) -> list[int]:
    """This rank's share of the global batch at ``step``: a slice of a seeded
    permutation of the dataset, one permutation per epoch; rank ``r`` of ``W``
    takes positions ``r, r + W, r + 2W, ...`` of the global batch."""
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), size)
        g = torch.Generator().manual_seed(step_seed(seed, f"{stage}/epoch", epoch))
        perm = torch.randperm(size, generator=g)
        take = min(batch_size - len(out), size - offset)
        out.extend(int(i) for i in perm[offset : offset + take])
    return out[world.rank :: world.size]


def collate(dataset: Any, indices: Sequence[int]) -> Batch:
    """The examples at ``indices`` as one :class:`Batch` (masks only if every example has one)."""
    examples = [dataset[i] for i in indices]
    images = torch.stack([e.image for e in examples])
    masks = None
    if all(e.mask is not None for e in examples):
        masks = torch.stack([e.mask for e in examples])  # type: ignore[misc]
    return Batch(images, [e.caption for e in examples], masks)
