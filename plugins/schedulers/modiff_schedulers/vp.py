"""DDPM, DDIM and LCM: pure loops on the variance-preserving scale.

Each function takes

* ``model(x, t, alpha_bar) -> (x0, noise)`` estimates (see ``VPDenoiser``),
* ``x``: the state at ``timesteps[0]``,
* ``timesteps``: the timesteps to visit, and ``alpha_bars``: their
  ``alpha_bar`` followed by the one the last step lands on (1 = clean),
* ``noise_sampler(i) -> Tensor``: standard normal noise shaped like ``x``,
* ``callback(i, t, x, x0)``: called once per step with the model's input,

and returns the final state. They keep nothing between calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

VPModel = Callable[[torch.Tensor, float, float], tuple[torch.Tensor, torch.Tensor]]
NoiseSampler = Callable[[int], torch.Tensor]
Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


def sample_ddim(
    model: VPModel,
    x: torch.Tensor,
    timesteps: Sequence[float],
    alpha_bars: Sequence[float],
    *,
    eta: float = 0.0,
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): ``eta = 0`` is deterministic, ``eta = 1``
    adds the DDPM posterior's noise."""
    for i, t in enumerate(timesteps):
        a_t, a_prev = alpha_bars[i], alpha_bars[i + 1]
        x0, eps = model(x, t, a_t)
        if callback is not None:
            callback(i, t, x, x0)
        var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        std = eta * math.sqrt(max(var, 0.0))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - std**2, 0.0)) * eps
        if std > 0:
            assert noise_sampler is not None, "eta > 0 needs a noise sampler"
            x = x + std * noise_sampler(i)
    return x


def sample_ddpm(
    model: VPModel,
    x: torch.Tensor,
    timesteps: Sequence[float],
    alpha_bars: Sequence[float],
    *,
    variance_type: str = "fixed_small",
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020): the posterior mean of
    ``q(x_prev | x_t, x0)`` plus noise of the posterior variance
    (``fixed_small``) or ``beta`` (``fixed_large``); the last step adds none."""
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        a_t, a_prev = alpha_bars[i], alpha_bars[i + 1]
        x0, _ = model(x, t, a_t)
        if callback is not None:
            callback(i, t, x, x0)
        alpha = a_t / a_prev
        beta = 1 - alpha
        c_x0 = math.sqrt(a_prev) * beta / (1 - a_t)
        c_xt = math.sqrt(alpha) * (1 - a_prev) / (1 - a_t)
        x = c_x0 * x0 + c_xt * x
        if i < n - 1:
            var = beta if variance_type == "fixed_large" else max((1 - a_prev) / (1 - a_t) * beta, 1e-20)
            assert noise_sampler is not None, "DDPM needs a noise sampler"
            x = x + math.sqrt(var) * noise_sampler(i)
    return x


def consistency_scalings(t: float, timestep_scaling: float, sigma_data: float = 0.5) -> tuple[float, float]:
    """LCM's boundary condition ``(c_skip, c_out)`` at timestep ``t``: the
    consistency function is ``c_skip * x_t + c_out * x0``, the identity at
    ``t = 0`` and almost the x0 estimate elsewhere."""
    scaled = t * timestep_scaling
    return sigma_data**2 / (scaled**2 + sigma_data**2), scaled / math.sqrt(scaled**2 + sigma_data**2)


def sample_lcm(
    model: VPModel,
    x: torch.Tensor,
    timesteps: Sequence[float],
    alpha_bars: Sequence[float],
    *,
    timestep_scaling: float = 10.0,
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Multistep consistency sampling (Luo et al. 2023, Algorithm 1; Song et
    al. 2023): each step maps ``x_t`` to the consistency function's clean
    sample, then noises it afresh to the next timestep; the last step returns
    the clean sample. ``callback`` gets that clean sample as the x0 estimate."""
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        x0, _ = model(x, t, alpha_bars[i])
        c_skip, c_out = consistency_scalings(t, timestep_scaling)
        denoised = c_out * x0 + c_skip * x
        if callback is not None:
            callback(i, t, x, denoised)
        if i == n - 1:
            return denoised
        assert noise_sampler is not None, "LCM needs a noise sampler"
        a_next = alpha_bars[i + 1]
        x = math.sqrt(a_next) * denoised + math.sqrt(1 - a_next) * noise_sampler(i)
    return x
