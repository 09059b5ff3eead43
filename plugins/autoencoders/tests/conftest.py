"""Shared test helpers: tiny coloured-shape images, rendered here so that the
tests depend on no other plugin."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

PALETTE = torch.tensor(
    [[230, 40, 40], [40, 200, 60], [50, 90, 240], [240, 220, 40], [170, 60, 220], [40, 210, 220]],
    dtype=torch.float32,
) / 127.5 - 1.0


def render_squares(n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` images ``[3, size, size]`` in [-1, 1]: black, one solid square of a
    palette colour at a random place."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, size, size), -1.0)
    side = max(2, size // 3)
    for i in range(n):
        colour = PALETTE[int(torch.randint(len(PALETTE), (1,), generator=g))]
        y, x = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=g))
        images[i, :, y : y + side, x : x + side] = colour.view(3, 1, 1)
    return images


@pytest.fixture
def squares() -> Callable[[int, int, int], torch.Tensor]:
    return render_squares
