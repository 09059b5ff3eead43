"""What one training step gives a component's own loss, so that N processes train as one.

It is the one value of the training loop that a component sees (a
``Trainable``'s ``training_loss(batch, step)``), so it lies below the
protocols that name it and the trainer that makes it, outside the training
package: a component imports no trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from . import noise

T = TypeVar("T")


@dataclass(frozen=True)
class TrainingStep:
    """The step's random source and the processes that share its batch.

    A component's ``training_loss(batch, step)`` receives this process's share
    of the global batch: under ``torchrun`` with ``W`` processes, rank ``r``
    holds the global batch's rows ``r, r + W, r + 2W, ...``. A loss that draws
    its random numbers through :meth:`randn` (made for the whole global batch
    from the step's generator; this share returned) and takes batch-wide
    quantities, such as a contrastive loss's negatives, through
    :meth:`gather`, gives N processes one process's updates, up to the order
    of floating-point sums. On one process both are plain.

    Attributes:
        generator: the step's generator, a pure function of (seed, stage, step).
        rank: this process's rank.
        world_size: the number of processes.
    """

    generator: torch.Generator
    rank: int = 0
    world_size: int = 1

    def randn(self, shape: Sequence[int], *, device: Any = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal noise for this share (``shape[0]`` rows) of the global batch."""
        rows, *rest = shape
        drawn = torch.randn((rows * self.world_size, *rest), generator=self.generator, dtype=dtype)
        return noise.to_device(drawn[self.rank :: self.world_size], device if device is not None else "cpu")

    def generators(self, rows: int) -> list[torch.Generator]:
        """One generator for each of this share's ``rows`` samples, seeded from
        draws made for the global batch: for components that take per-sample
        generators (an encoder sampling its posterior)."""
        seeds = torch.randint(0, 2**62, (rows * self.world_size,), generator=self.generator)
        return noise.generators([int(s) for s in seeds[self.rank :: self.world_size]])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(x.shape, device=x.device, dtype=x.dtype)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (this share's rows) concatenated over every process, in the global
        batch's order. Gradients flow back to each process's own rows, so a loss
        computed on the gathered tensor by every process trains as one process
        computing it on the whole batch (gradients are averaged over processes)."""
        if self.world_size == 1:
            return x
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(x.contiguous())
        return torch.stack(list(parts), dim=1).reshape(-1, *x.shape[1:])

    def gather_objects(self, items: Sequence[T]) -> list[T]:
        """A list (such as the captions) over every process, in the global batch's order."""
        if self.world_size == 1:
            return list(items)
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, list(items))
        return [parts[j % self.world_size][j // self.world_size] for j in range(len(items) * self.world_size)]
