"""Making latents unit-variance, per channel or globally, from data.

The noise schedule assumes the clean signal has unit variance. SD 1.x divides
its latents by one global standard deviation (``scaling_factor = 0.18215``).
On the shapes world that was measured to fail (FINDINGS.md): after one global
scale the channels had standard deviations 1.75, 0.88, 0.33, 0.21, the colour
information lived in the small ones, and the diffusion model never learned
colours because the noise drowned those channels first. Per-channel
normalisation gives every channel mean 0 and variance 1, so no channel is
drowned earlier than another.

The statistics are buffers, so they travel in ``state_dict()`` with the
weights; a ``fitted`` flag travels with them and tells whether they were
estimated (or set) or are still the identity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn


class LatentNormalizer(nn.Module):
    """``normalize(z) = (z - shift) * scale`` per channel, and its inverse.

    Both modes store one shift and one scale per channel; in ``"global"`` mode
    all channels hold the same value. The identity (shift 0, scale 1) until
    :meth:`fit` or :meth:`set` is called.
    """

    def __init__(self, channels: int, mode: str = "per-channel") -> None:
        super().__init__()
        if mode not in ("per-channel", "global"):
            raise ValueError(f"latent normalisation {mode!r} is unknown; use 'per-channel' or 'global'")
        self.mode = mode
        self.register_buffer("shift", torch.zeros(channels))
        self.register_buffer("scale", torch.ones(channels))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def normalize(self, z: Tensor) -> Tensor:
        return (z - self.shift.view(1, -1, 1, 1)) * self.scale.view(1, -1, 1, 1)

    def denormalize(self, z: Tensor) -> Tensor:
        return z / self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)

    @torch.no_grad()
    def set(self, scale: float | Tensor, shift: float | Tensor = 0.0) -> None:
        """Set the statistics by hand (a scalar or one value per channel), e.g.
        SD 1.x's ``scale = 0.18215, shift = 0`` for imported weights."""
        scale_t = torch.as_tensor(scale, dtype=self.scale.dtype).to(self.scale.device).expand_as(self.scale)
        shift_t = torch.as_tensor(shift, dtype=self.shift.dtype).to(self.shift.device).expand_as(self.shift)
        if not torch.isfinite(scale_t).all() or (scale_t <= 0).any():
            raise ValueError(f"latent scale must be finite and positive, got {scale_t.tolist()}")
        if not torch.isfinite(shift_t).all():
            raise ValueError(f"latent shift must be finite, got {shift_t.tolist()}")
        self.scale.copy_(scale_t)
        self.shift.copy_(shift_t)
        self.fitted.fill_(True)

    @torch.no_grad()
    def fit(self, latents: Iterable[Tensor]) -> None:
        """Estimate shift and scale from raw latents ``[B, C, h, w]`` so that
        normalised latents have mean 0 and variance 1 (per channel, or over
        all elements in ``"global"`` mode). Sums run in float64 so that many
        batches do not lose precision."""
        channels = self.scale.numel()
        count = torch.zeros(channels, dtype=torch.float64)
        total = torch.zeros(channels, dtype=torch.float64)
        total_sq = torch.zeros(channels, dtype=torch.float64)
        for z in latents:
            if z.ndim != 4 or z.shape[1] != channels:
                raise ValueError(f"expected latents [B, {channels}, h, w], got {tuple(z.shape)}")
            z64 = z.detach().to("cpu", torch.float64).transpose(0, 1).reshape(channels, -1)
            count += z64.shape[1]
            total += z64.sum(dim=1)
            total_sq += z64.square().sum(dim=1)
        if count.sum() < 2:
            raise ValueError("cannot estimate latent statistics from fewer than 2 values: give at least one batch")
        if self.mode == "global":
            count, total, total_sq = (v.sum().expand(channels) for v in (count, total, total_sq))
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(0.0) * count / (count - 1).clamp_min(1)
        std = var.sqrt().clamp_min(1e-8)  # a dead channel keeps a finite scale
        self.set(scale=(1.0 / std).float(), shift=mean.float())

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A state dict without statistics (diffusers' AutoencoderKL has none)
        # keeps the current ones instead of failing a strict load; a state dict
        # with some but not all of them is broken and still reported.
        names = ("shift", "scale", "fitted")
        if not any(prefix + name in state_dict for name in names):
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"channels={self.scale.numel()}, mode={self.mode!r}, fitted={self.is_fitted}"
