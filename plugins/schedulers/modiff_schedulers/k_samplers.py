"""Single-step and linear-multistep samplers on the sigma scale, k-diffusion style.

Every function takes

* ``model(x, sigma) -> x0`` estimate (k-diffusion's "denoised"; see
  ``SigmaDenoiser``) for ``x = x0 + sigma * noise``,
* ``x``: the state at ``sigmas[0]``,
* ``sigmas``: the noise levels to visit, decreasing, the last one 0,
* ``noise_sampler(sigma, sigma_next) -> Tensor``: standard normal noise
  shaped like ``x`` (only the stochastic samplers call it),
* ``callback(i, sigma, x, denoised)``: once per step, with the state the
  model was evaluated at,

and returns the state at ``sigmas[-1]``. Nothing is kept between calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

SigmaModel = Callable[[torch.Tensor, float], torch.Tensor]
NoiseSampler = Callable[[float, float], torch.Tensor]
Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


def sample_euler(
    model: SigmaModel,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 2).

    With ``s_churn > 0`` each step first raises the noise level to
    ``sigma_hat = sigma * (1 + gamma)`` by adding fresh noise, then evaluates
    the model at ``sigma_hat``.
    """
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            assert noise_sampler is not None, "s_churn > 0 needs a noise sampler"
            x = x + noise_sampler(sigma, sigma_next) * (s_noise * (sigma_hat**2 - sigma**2) ** 0.5)
        denoised = model(x, sigma_hat)
        if callback is not None:
            callback(i, sigma_hat, x, denoised)
        d = (x - denoised) / sigma_hat
        x = x + d * (sigma_next - sigma_hat)
    return x


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """``(sigma_down, sigma_up)``: step deterministically to ``sigma_down``, then
    add noise of scale ``sigma_up`` so the total noise is ``sigma_to``."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def sample_euler_ancestral(
    model: SigmaModel,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Ancestral Euler: an Euler step to ``sigma_down`` plus fresh noise."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if callback is not None:
            callback(i, sigma, x, denoised)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        d = (x - denoised) / sigma
        x = x + d * (sigma_down - sigma)
        if sigma_next > 0 and sigma_up > 0:
            assert noise_sampler is not None, "euler-ancestral needs a noise sampler"
            x = x + noise_sampler(sigma, sigma_next) * (sigma_up * s_noise)
    return x


def sample_heun(
    model: SigmaModel,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Alg. 1): an Euler step,
    then the average of the slopes at both ends; the step to sigma = 0 is a
    plain Euler step (two model calls per step otherwise)."""
    del noise_sampler
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if callback is not None:
            callback(i, sigma, x, denoised)
        d = (x - denoised) / sigma
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigma_next)) / sigma_next
            x = x + ((d + d_2) / 2) * dt
    return x


def lincomb(coeffs: Sequence[float], tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum(c * t)`` over the first ``len(coeffs)`` tensors, without the extra
    ``0 + ...`` that Python's ``sum`` adds (same value, one tensor op fewer)."""
    out = coeffs[0] * tensors[0]
    for c, t in zip(coeffs[1:], tensors[1 : len(coeffs)], strict=True):
        out = out + c * t
    return out


def lms_coefficient(sigmas: Sequence[float], i: int, order: int, j: int) -> float:
    """Integral over ``[sigma_i, sigma_{i+1}]`` of the Lagrange basis polynomial
    that is 1 at ``sigma_{i-j}`` and 0 at the other ``order - 1`` past sigmas.

    Computed exactly (polynomial in ``u = sigma - sigma_i``), not by quadrature.
    """
    origin = sigmas[i]
    poly = [1.0]  # coefficients in ascending powers of u
    for k in range(order):
        if k == j:
            continue
        root = sigmas[i - k] - origin
        denom = sigmas[i - j] - sigmas[i - k]
        shifted = [0.0] + poly  # u * poly
        poly = [(shifted[p] - root * (poly[p] if p < len(poly) else 0.0)) / denom for p in range(len(shifted))]
    width = sigmas[i + 1] - origin
    return sum(c * width ** (p + 1) / (p + 1) for p, c in enumerate(poly))


def sample_lms(
    model: SigmaModel,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    order: int = 4,
) -> torch.Tensor:
    """Linear multistep: integrates the Lagrange polynomial through the last
    ``order`` slopes ``(x - denoised) / sigma`` (fewer while warming up)."""
    del noise_sampler
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        denoised = model(x, sigma)
        if callback is not None:
            callback(i, sigma, x, denoised)
        ds.append((x - denoised) / sigma)
        if len(ds) > order:
            ds.pop(0)
        cur = min(i + 1, order)
        coeffs = [lms_coefficient(sigmas, i, cur, j) for j in range(cur)]
        x = x + lincomb(coeffs, ds[::-1])
    return x
