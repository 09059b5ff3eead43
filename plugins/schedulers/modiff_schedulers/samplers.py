"""DDPM and DDIM as pure loops over a model function."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from modiff import randn

from .config import DDIMSettings, ScheduleSettings
from .schedule import NoiseSchedule


class DDIMScheduler(NoiseSchedule):
    def __init__(self, settings: ScheduleSettings):
        super().__init__(settings)
        self.eta = getattr(settings, "eta", 0.0)

    def timesteps(self, steps: int) -> torch.Tensor:
        ratio = self.num_train_timesteps // steps
        return (torch.arange(steps) * ratio).flip(0)

    def sample(self, model_fn, noise, steps, *, generator=None, callback=None, start_step=0):
        x = noise
        ts = self.timesteps(steps)
        ratio = self.num_train_timesteps // steps
        for i in range(start_step, len(ts)):
            t = int(ts[i])
            abar = self.alphas_cumprod[t].to(x.dtype)
            prev = t - ratio
            abar_prev = self.alphas_cumprod[prev].to(x.dtype) if prev >= 0 else torch.tensor(1.0, dtype=x.dtype)
            pred = model_fn(x, torch.full((x.shape[0],), float(t), device=x.device))
            x0, eps = self.to_x0_eps(pred, x, abar)
            var = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
            sigma = self.eta * var.clamp(min=0).sqrt()
            x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
            if self.eta > 0:
                x = x + sigma * randn(x.shape, generator, device=x.device, dtype=x.dtype)
            if callback is not None:
                callback(i, torch.tensor(t), x, x0)
        return x


class DDPMScheduler(DDIMScheduler):
    def __init__(self, settings: ScheduleSettings):
        super().__init__(DDIMSettings(**settings.model_dump(), eta=1.0))
