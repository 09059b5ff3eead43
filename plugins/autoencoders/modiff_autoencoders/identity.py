"""``identity``: pixel space as an encoder, so that "pixel vs latent" is one
line of a settings file (``[encoder] plugin = "identity"``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import Tensor


class PixelSpace:
    """Images are their own latents: ``downscale = 1``, 3 channels, scale 1.

    ``encode`` and ``decode`` return their input unchanged (the same tensor,
    no copy, no clamp), so a pixel-space run differs from a latent one only in
    where the denoiser works.
    """

    latent_channels: int = 3
    downscale: int = 1
    scaling_factor: float = 1.0
    #: Nothing to learn: the training stage is always skipped.
    needs_training: bool = False

    def encode(
        self, images: Tensor, *, generator: torch.Generator | Sequence[torch.Generator] | None = None
    ) -> Tensor:
        """Check the shape and return ``images`` as they are (``generator`` is unused)."""
        _check(images, "images [B, 3, H, W]")
        return images

    def decode(self, latents: Tensor) -> Tensor:
        _check(latents, "latents [B, 3, H, W]")
        return latents

    def __repr__(self) -> str:
        return "PixelSpace()"


def _check(x: Tensor, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"the identity encoder expects {what}, got a tensor of shape {tuple(x.shape)}")
