"""Exponential-integrator multistep samplers on the sigma scale: DPM-Solver++(2M),
its SDE variant and UniPC.

Same calling convention as :mod:`k_samplers`. They work in ``lambda = -log
sigma`` (half the log-SNR), reuse the previous steps' x0 estimates for higher
order, start first-order (no history; also after ``start_step``) and end with
the x0 estimate itself, since the last step goes to sigma = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .k_samplers import Callback, NoiseSampler, SigmaModel, lincomb

# One DPM-Solver++ step from ``sigma`` to ``sigma_next > 0``: gets the state
# ``x``, the x0 estimate ``denoised``, the second-order difference ``d1`` (None
# on a first-order step), both sigmas and ``h``, the step in lambda.
_DPMStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, float, float, float], torch.Tensor]


def _dpmpp_2m_loop(
    model: SigmaModel,
    x: torch.Tensor,
    sigmas: Sequence[float],
    callback: Callback | None,
    step: _DPMStep,
) -> torch.Tensor:
    """The loop both DPM-Solver++(2M) variants share: one model call a step,
    the previous x0 estimate as history (``d1`` scaled to this step's ``h``),
    and the x0 estimate itself as the step to sigma = 0; ``step`` is the
    variant's update."""
    old: torch.Tensor | None = None
    h_last = 0.0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        if callback is not None:
            callback(i, sigma, x, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma) - math.log(sigma_next)
        d1 = None if old is None else (denoised - old) * (h / h_last)
        x = step(x, denoised, d1, sigma, sigma_next, h)
        old, h_last = denoised, h
    return x


def sample_dpmpp_2m(
    model: SigmaModel,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    solver_type: str = "midpoint",
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), data-prediction multistep, order 2."""
    del noise_sampler

    def step(
        x: torch.Tensor, denoised: torch.Tensor, d1: torch.Tensor | None, sigma: float, sigma_next: float, h: float
    ) -> torch.Tensor:
        phi = math.exp(-h) - 1.0  # exp(-h) - 1 < 0
        x = (sigma_next / sigma) * x - phi * denoised
        if d1 is not None:
            if solver_type == "heun":
                x = x + (phi / h + 1.0) * d1
            else:
                x = x - (0.5 * phi) * d1
        return x

    return _dpmpp_2m_loop(model, x, sigmas, callback, step)


def sample_dpmpp_2m_sde(
    model: SigmaModel,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    solver_type: str = "midpoint",
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: the stochastic variant; ``eta = 1`` is the
    reverse SDE, ``eta = 0`` the ODE solver."""

    def step(
        x: torch.Tensor, denoised: torch.Tensor, d1: torch.Tensor | None, sigma: float, sigma_next: float, h: float
    ) -> torch.Tensor:
        eta_h = eta * h
        one_minus = -math.expm1(-h - eta_h)  # 1 - exp(-(1 + eta) h)
        x = (sigma_next / sigma * math.exp(-eta_h)) * x + one_minus * denoised
        if d1 is not None:
            if solver_type == "heun":
                x = x + (one_minus / (-h - eta_h) + 1.0) * d1
            else:
                x = x + (0.5 * one_minus) * d1
        if eta:
            assert noise_sampler is not None, "dpmpp-2m-sde needs a noise sampler"
            x = x + noise_sampler(sigma, sigma_next) * (sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
        return x

    return _dpmpp_2m_loop(model, x, sigmas, callback, step)


# ----------------------------------------------------------------------
# UniPC
# ----------------------------------------------------------------------


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting for the tiny (order <= 4) systems of UniPC."""
    n = len(b)
    m = [row[:] + [b[r]] for r, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(c + 1, n):
            f = m[r][c] / m[c][c]
            for k in range(c, n + 1):
                m[r][k] -= f * m[c][k]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (m[r][n] - sum(m[r][k] * out[k] for k in range(r + 1, n))) / m[r][r]
    return out


def _unipc_terms(
    h: float, rks: list[float], order: int, solver_type: str
) -> tuple[float, float, list[list[float]], list[float]]:
    """``h*phi_1(-h)``, ``B(h)`` and the system ``R rho = b`` of UniPC
    (Zhao et al. 2023, data prediction)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if solver_type == "bh1" else math.expm1(hh)
    r_rows, b = [], []
    factorial = 1
    for k in range(1, order + 1):
        r_rows.append([rk ** (k - 1) for rk in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, r_rows, b


def sample_unipc(
    model: SigmaModel,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    order: int = 2,
    solver_type: str = "bh2",
    disable_corrector: Sequence[int] = (),
) -> torch.Tensor:
    """UniPC: a UniP predictor of ``order`` and, from the second step on, a
    UniC corrector that refines the current state with the model output just
    computed (no extra model call). Orders ramp up over the first steps and
    down over the last ones (``min(order, steps left)``)."""
    del noise_sampler
    n = len(sigmas) - 1
    lambdas = [-math.log(s) if s > 0 else math.inf for s in sigmas]
    outputs: list[torch.Tensor] = []  # x0 estimates, oldest first
    last_sample: torch.Tensor | None = None
    this_order = 0
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        m_i = model(x, sigma)
        if callback is not None:
            callback(i, sigma, x, m_i)
        if i > 0 and (i - 1) not in disable_corrector and last_sample is not None:
            x = _unic(outputs, m_i, last_sample, sigmas, lambdas, i, this_order, solver_type)
        outputs.append(m_i)
        if len(outputs) > order:
            outputs.pop(0)
        this_order = min(order, n - i, len(outputs))
        last_sample = x
        if sigma_next == 0:
            x = m_i  # first-order step to sigma = 0 returns the x0 estimate
        else:
            x = _unip(outputs, x, sigmas, lambdas, i, this_order, solver_type)
    return x


def _unipc_history(
    outputs: list[torch.Tensor], lambdas: Sequence[float], base: int, h: float, order: int
) -> tuple[list[float], list[torch.Tensor]]:
    """The ratios ``r_k`` of the past steps to ``h`` (lambdas counted back from
    ``lambdas[base]``, with 1.0 appended for the current step) and the scaled
    differences ``D1_k`` of the past x0 estimates to the newest one; shared by
    the predictor and the corrector, which differ only in ``base``."""
    m0 = outputs[-1]
    rks, d1s = [], []
    for k in range(1, order):
        rk = (lambdas[base - k] - lambdas[base]) / h
        rks.append(rk)
        d1s.append((outputs[-(k + 1)] - m0) / rk)
    rks.append(1.0)
    return rks, d1s


def _unip(
    outputs: list[torch.Tensor],
    x: torch.Tensor,
    sigmas: Sequence[float],
    lambdas: Sequence[float],
    i: int,
    order: int,
    solver_type: str,
) -> torch.Tensor:
    """Predictor from ``sigmas[i]`` to ``sigmas[i + 1]``."""
    m0 = outputs[-1]
    h = lambdas[i + 1] - lambdas[i]
    rks, d1s = _unipc_history(outputs, lambdas, i, h, order)
    h_phi_1, b_h, r_rows, b = _unipc_terms(h, rks, order, solver_type)
    x_next = (sigmas[i + 1] / sigmas[i]) * x - h_phi_1 * m0
    if d1s:
        if order == 2:
            rhos = [0.5]
        else:
            rhos = _solve([row[:-1] for row in r_rows[:-1]], b[:-1])
        x_next = x_next - b_h * lincomb(rhos, d1s)
    return x_next


def _unic(
    outputs: list[torch.Tensor],
    model_t: torch.Tensor,
    last_sample: torch.Tensor,
    sigmas: Sequence[float],
    lambdas: Sequence[float],
    i: int,
    order: int,
    solver_type: str,
) -> torch.Tensor:
    """Corrector of the state at ``sigmas[i]``, reached from ``sigmas[i - 1]``,
    using the model output ``model_t`` at that state."""
    m0 = outputs[-1]
    h = lambdas[i] - lambdas[i - 1]
    rks, d1s = _unipc_history(outputs, lambdas, i - 1, h, order)
    h_phi_1, b_h, r_rows, b = _unipc_terms(h, rks, order, solver_type)
    rhos = [0.5] if order == 1 else _solve(r_rows, b)
    x_t = (sigmas[i] / sigmas[i - 1]) * last_sample - h_phi_1 * m0
    corr = model_t - m0
    if d1s:
        return x_t - b_h * (lincomb(rhos[:-1], d1s) + rhos[-1] * corr)
    return x_t - b_h * (rhos[-1] * corr)

