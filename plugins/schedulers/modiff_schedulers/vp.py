"""DDPM and DDIM: pure loops on the variance-preserving scale.

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
