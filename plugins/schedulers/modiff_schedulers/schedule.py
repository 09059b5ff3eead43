"""The variance-preserving noise schedule: betas, alpha bars, noising, targets."""

from __future__ import annotations

import math

import torch

from .config import ScheduleSettings


def make_betas(s: ScheduleSettings) -> torch.Tensor:
    n = s.num_train_timesteps
    if s.beta_schedule == "linear":
        return torch.linspace(s.beta_start, s.beta_end, n, dtype=torch.float64)
    if s.beta_schedule == "scaled_linear":
        return torch.linspace(s.beta_start**0.5, s.beta_end**0.5, n, dtype=torch.float64) ** 2
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return torch.tensor([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float64)


class NoiseSchedule:
    """Training side shared by all samplers of one schedule."""

    def __init__(self, settings: ScheduleSettings):
        self.settings = settings
        self.prediction_type = settings.prediction_type
        self.num_train_timesteps = settings.num_train_timesteps
        self.betas = make_betas(settings)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod.to(like.device)[t.long().clamp(0, self.num_train_timesteps - 1)]
        return abar.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        abar = self._abar(t, x0)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0

    def sample_timesteps(self, batch_size: int, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        t = torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator)
        return t.to(device) if device is not None else t

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones(t.shape[0], device=t.device)

    def to_x0_eps(self, pred: torch.Tensor, x: torch.Tensor, abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = abar.sqrt(), (1 - abar).sqrt()
        if self.prediction_type == "epsilon":
            return (x - s * pred) / a, pred
        if self.prediction_type == "sample":
            return pred, (x - a * pred) / s
        x0 = a * x - s * pred
        return x0, s * x + a * pred
