"""Turning a modiff ``model_fn`` into the denoisers the pure samplers call.

``model_fn(x_t, t)`` sees what the network was trained on: ``x_t`` on the
variance-preserving scale and ``t`` as float timesteps ``[B]``. The samplers
work either on that scale (DDPM, DDIM: ``VPDenoiser`` returns the x0 and noise
estimates) or on the sigma scale ``x = x0 + sigma * noise`` (everything else:
``SigmaDenoiser`` returns the x0 estimate, k-diffusion's "denoised"). The
wrappers do the conversions, so the samplers never see a prediction type.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from .config import ScheduleSettings

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def process_x0(x0: torch.Tensor, settings: ScheduleSettings) -> torch.Tensor:
    """Dynamic thresholding (Saharia et al. 2022) or clipping of an x0
    estimate, per the settings; each sample is thresholded on its own."""
    if settings.thresholding:
        b = x0.shape[0]
        flat = x0.reshape(b, -1)
        work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
        s = torch.quantile(work.abs(), settings.dynamic_thresholding_ratio, dim=1)
        s = s.clamp(min=1, max=settings.sample_max_value).unsqueeze(1)
        return (torch.clamp(work, -s, s) / s).reshape(x0.shape).to(x0.dtype)
    if settings.clip_sample:
        r = settings.clip_sample_range
        return x0.clamp(-r, r)
    return x0


def time_dtype(x: torch.Tensor) -> torch.dtype:
    """Timesteps go to the model in float64 for float64 inputs, else float32
    (half precision cannot hold fractional timesteps near 1000)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class TimeTable:
    """The timestep tensors of one sampling run, made before its loop.

    Every timestep of the grid becomes a row ``[B]`` of one tensor built on the
    host and copied to the device once, so the loop neither allocates nor
    copies anything to give the model its ``t``. A timestep off the grid (the
    raised noise level of Euler with churn) or a state of another batch size,
    dtype or device falls back to a fresh ``torch.full``.
    """

    def __init__(self, timesteps: Sequence[float], like: torch.Tensor):
        self.batch, self.dtype, self.device = like.shape[0], time_dtype(like), like.device
        grid = sorted(set(timesteps))
        table = torch.tensor(grid, dtype=self.dtype)[:, None].expand(len(grid), self.batch).contiguous()
        table = table.to(self.device)
        self.rows = {t: table[i] for i, t in enumerate(grid)}

    def __call__(self, t: float, x: torch.Tensor) -> torch.Tensor:
        row = self.rows.get(t)
        if row is None or x.shape[0] != self.batch or time_dtype(x) != self.dtype or x.device != self.device:
            return torch.full((x.shape[0],), t, dtype=time_dtype(x), device=x.device)
        return row


def _call(model_fn: ModelFn, x: torch.Tensor, t: float, times: TimeTable) -> torch.Tensor:
    out = model_fn(x, times(t, x))
    if out.shape != x.shape:
        raise ValueError(
            f"model_fn returned shape {tuple(out.shape)} for an input of shape {tuple(x.shape)}; a sampler needs "
            "a prediction with the input's shape (is the denoiser's out_channels equal to its in_channels?)"
        )
    return out


class VPDenoiser:
    """``(x_t, t, alpha_bar) -> (x0, noise)`` estimates on the VP scale.

    The noise estimate is the one implied by the raw prediction, before any
    clipping of x0 (as DDIM defines it).
    """

    def __init__(self, model_fn: ModelFn, settings: ScheduleSettings, times: TimeTable):
        self.model_fn = model_fn
        self.settings = settings
        self.prediction_type = settings.prediction_type
        self.times = times

    def __call__(self, x: torch.Tensor, t: float, abar: float) -> tuple[torch.Tensor, torch.Tensor]:
        pred = _call(self.model_fn, x, t, self.times)
        a, s = math.sqrt(abar), math.sqrt(1 - abar)
        if self.prediction_type == "epsilon":
            x0, eps = (x - s * pred) / a, pred
        elif self.prediction_type == "sample":
            x0, eps = pred, (x - a * pred) / s
        else:
            x0, eps = a * x - s * pred, a * pred + s * x
        return process_x0(x0, self.settings), eps


class SigmaDenoiser:
    """``(x, sigma) -> x0`` estimate for ``x = x0 + sigma * noise``.

    The model sees ``x / sqrt(1 + sigma^2)`` (the VP input it was trained on)
    and the timestep of ``sigma``: the exact one for the noise levels of the
    sampler's grid (``timestep_of``), otherwise the fractional timestep found
    by log-linear interpolation of the training sigmas.
    """

    def __init__(
        self,
        model_fn: ModelFn,
        settings: ScheduleSettings,
        timestep_of: Mapping[float, float],
        sigma_to_t: Callable[[float], float],
        times: TimeTable,
    ):
        self.model_fn = model_fn
        self.settings = settings
        self.prediction_type = settings.prediction_type
        self.timestep_of = timestep_of
        self.sigma_to_t = sigma_to_t
        self.times = times

    def timestep(self, sigma: float) -> float:
        t = self.timestep_of.get(sigma)
        return self.sigma_to_t(sigma) if t is None else t

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        c_in = 1 / math.sqrt(sigma**2 + 1)
        pred = _call(self.model_fn, x * c_in, self.timestep(sigma), self.times)
        if self.prediction_type == "epsilon":
            x0 = x - sigma * pred
        elif self.prediction_type == "sample":
            x0 = pred
        else:
            x0 = pred * (-sigma * c_in) + x * (c_in * c_in)
        return process_x0(x0, self.settings)
