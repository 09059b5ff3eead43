"""The encoder and decoder networks of the SD VAE, and its posterior.

Both networks are plain functions of a tensor; scaling, slicing and losses
live in :mod:`modiff_autoencoders.kl`, so these stay a faithful, checkable
copy of the architecture (parity with diffusers is tested on them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import DownBlock, MidBlock, UpBlock, group_norm

#: Log-variance bounds of the posterior, as in the SD VAE: keeps exp() finite
#: for untrained or degenerate weights.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class VAEEncoder(nn.Module):
    """Image ``[B, 3, H, W]`` -> posterior moments ``[B, 2 * latent, H/f, W/f]``
    (before ``quant_conv``): mean channels first, log-variances second."""

    def __init__(
        self, channels: Sequence[int], latent_channels: int, layers: int, groups: int, attention: bool
    ) -> None:
        super().__init__()
        widths = list(channels)
        self.conv_in = nn.Conv2d(3, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            DownBlock(widths[max(i - 1, 0)], widths[i], layers, groups, downsample=i < len(widths) - 1)
            for i in range(len(widths))
        )
        self.mid_block = MidBlock(widths[-1], groups, attention)
        self.conv_norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], 2 * latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for block in self.down_blocks:
            h = block(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class VAEDecoder(nn.Module):
    """Latent ``[B, latent, h, w]`` (after ``post_quant_conv``) -> image
    ``[B, 3, h*f, w*f]``; the encoder mirrored, with one more residual block
    per level."""

    def __init__(
        self, channels: Sequence[int], latent_channels: int, layers: int, groups: int, attention: bool
    ) -> None:
        super().__init__()
        widths = list(reversed(channels))
        self.conv_in = nn.Conv2d(latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(widths[0], groups, attention)
        self.up_blocks = nn.ModuleList(
            UpBlock(widths[max(i - 1, 0)], widths[i], layers + 1, groups, upsample=i < len(widths) - 1)
            for i in range(len(widths))
        )
        self.conv_norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


@dataclass(frozen=True)
class DiagonalGaussian:
    """The posterior q(z | x): independent normals per latent element."""

    mean: Tensor
    logvar: Tensor

    @classmethod
    def from_moments(cls, moments: Tensor) -> DiagonalGaussian:
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, noise: Tensor) -> Tensor:
        """``mean + std * noise``; the caller draws ``noise`` (so it controls
        the generators and batch independence)."""
        return self.mean + self.std * noise

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per element, ``[B, C, h, w]``."""
        return 0.5 * (self.mean.square() + self.logvar.exp() - 1.0 - self.logvar)
