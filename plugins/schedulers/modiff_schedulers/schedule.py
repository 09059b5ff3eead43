"""The variance-preserving noise schedule and its training side.

Everything here is computed in float64 once per scheduler and is shared by
all samplers: ``alpha_bar[t]`` (the fraction of signal variance left at
timestep ``t``), the matching noise levels ``sigma[t] = sqrt((1 - a) / a)``
of the equivalent variance-exploding process, and the training objective.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .config import ScheduleSettings
from .spacing import time_shift

#: alpha_bar used instead of 0 for the last timestep of a zero-terminal-SNR
#: schedule on the sigma scale, where sigma = inf cannot be represented; the
#: same value diffusers uses, giving sigma_max ~ 4096. (If the timestep before
#: already has less signal, half of its alpha_bar is used instead, so sigma
#: keeps rising; diffusers would make sigma fall there.)
ZERO_SNR_ALPHA_BAR = 2.0**-24


def make_betas(s: ScheduleSettings) -> torch.Tensor:
    """``beta[t]`` for ``t = 0 .. T-1`` in float64."""
    n = s.num_train_timesteps
    if s.beta_schedule == "linear":
        return torch.linspace(s.beta_start, s.beta_end, n, dtype=torch.float64)
    if s.beta_schedule == "scaled_linear":
        return torch.linspace(s.beta_start**0.5, s.beta_end**0.5, n, dtype=torch.float64) ** 2
    if s.beta_schedule == "squaredcos_cap_v2":
        # Nichol & Dhariwal: alpha_bar(t) = cos^2((t + s) / (1 + s) * pi / 2), betas capped at 0.999.
        def abar(x: float) -> float:
            return math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=torch.float64)
    raise ValueError(f"unknown beta_schedule {s.beta_schedule!r}; use linear, scaled_linear or squaredcos_cap_v2")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale ``sqrt(alpha_bar)`` so the last timestep is pure noise
    while the first keeps its value (Lin et al. 2023, Algorithm 1)."""
    abar_sqrt = torch.cumprod(1 - betas, 0).sqrt()
    first, last = abar_sqrt[0].clone(), abar_sqrt[-1].clone()
    abar_sqrt = (abar_sqrt - last) * (first / (first - last))
    abar = abar_sqrt**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def _bcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B]`` coefficients shaped to broadcast over ``like`` ``[B, ...]``, in its dtype."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


class NoiseSchedule:
    """The training side every sampler shares.

    Attributes:
        settings: the validated settings.
        betas, alphas_cumprod: ``[T]`` float64; with zero-terminal-SNR
            rescaling ``alphas_cumprod[-1] == 0``.
        sigmas: ``[T]`` float64 noise levels on the sigma scale, finite even at
            zero SNR (``alpha_bar`` is floored at 2^-24 there).
    """

    def __init__(self, settings: ScheduleSettings):
        self.settings = settings
        self.prediction_type: str = settings.prediction_type
        self.num_train_timesteps: int = settings.num_train_timesteps
        betas = make_betas(settings)
        if settings.rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)
        abar = self.alphas_cumprod.clone()
        if settings.rescale_betas_zero_snr:
            abar[-1] = min(ZERO_SNR_ALPHA_BAR, float(abar[-2]) / 2)
        #: alpha_bar as the sigma-scale samplers see it (finite last sigma).
        self.alphas_cumprod_sigma = abar
        self.sigmas = ((1 - abar) / abar).sqrt()
        self.log_sigmas = self.sigmas.log()
        #: ``(alphas_cumprod, sigmas)`` per non-CPU device, copied on first use.
        self._device_tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._check()

    def _check(self) -> None:
        """Reject schedules that are not a proper diffusion: the SNR must fall
        strictly from the first timestep to the last (otherwise timesteps are
        indistinguishable, e.g. alpha_bar underflows to 0 long before T)."""
        abar = self.alphas_cumprod
        snr = abar / (1 - abar)
        bad = (~torch.isfinite(snr)) | (snr < 0)
        steps = snr[1:] >= snr[:-1]
        if bool(bad.any()) or bool(steps.any()):
            where = int(torch.nonzero(steps)[0]) + 1 if bool(steps.any()) else int(torch.nonzero(bad)[0])
            s = self.settings
            raise ValueError(
                f"the noise schedule (beta_schedule={s.beta_schedule!r}, beta_start={s.beta_start}, "
                f"beta_end={s.beta_end}, num_train_timesteps={s.num_train_timesteps}) does not have a strictly "
                f"decreasing signal-to-noise ratio (it stops falling at timestep {where}; alpha_bar = "
                f"{float(abar[where]):.3g}). Use smaller betas or fewer training timesteps."
            )

    # ------------------------------------------------------------------
    # Continuous time: fractional timesteps and sigmas
    # ------------------------------------------------------------------

    def alpha_bar_at(self, t: torch.Tensor) -> torch.Tensor:
        """``alpha_bar`` at float timesteps ``t`` (float64, same shape).

        Integral timesteps read the table; fractional ones interpolate sigma
        linearly between neighbouring timesteps, which is how the sigma-scale
        samplers place spaced timesteps, so ``add_noise`` at any timestep a
        sampler visits gives the noise level that sampler uses.
        """
        t = torch.as_tensor(t)
        if t.device.type not in ("cpu", "mps"):  # MPS has no float64
            return self._alpha_bar_on_device(t)
        t64 = t.to(dtype=torch.float64)
        n = self.num_train_timesteps
        if bool(torch.isnan(t64).any()) or bool((t64 < 0).any()) or bool((t64 > n - 1).any()):
            raise ValueError(
                f"timesteps must lie in [0, {n - 1}] (num_train_timesteps = {n}); got values from "
                f"{float(t64.min())} to {float(t64.max())}"
            )
        lo = t64.floor().long().clamp(max=n - 1)
        frac = t64 - lo
        exact = self.alphas_cumprod[lo]
        if not bool((frac > 0).any()):
            return exact
        hi = (lo + 1).clamp(max=n - 1)
        sigma = (1 - frac) * self.sigmas[lo] + frac * self.sigmas[hi]
        return torch.where(frac > 0, 1 / (1 + sigma**2), exact)

    def _alpha_bar_on_device(self, t: torch.Tensor) -> torch.Tensor:
        """:meth:`alpha_bar_at` computed where ``t`` lives, without reading
        anything back to the host.

        The training loop calls ``add_noise``, ``training_target`` and
        ``loss_weight`` with timesteps on the GPU at every step; copying them
        to the CPU to look up the table would make the host wait for the GPU
        each time. The tables are copied to the device once instead, and the
        range check is an asynchronous device assert (a timestep outside
        ``[0, T - 1]`` is a programming error there, not a user's).
        """
        n = self.num_train_timesteps
        abar, sigmas = self._device_tables.get(t.device) or self._copy_tables(t.device)
        t64 = t.to(dtype=torch.float64)
        torch._assert_async(((t64 >= 0) & (t64 <= n - 1)).all(), f"timesteps must lie in [0, {n - 1}]")
        lo = t64.floor().long().clamp(0, n - 1)
        frac = t64 - lo
        hi = (lo + 1).clamp(max=n - 1)
        sigma = (1 - frac) * sigmas[lo] + frac * sigmas[hi]
        return torch.where(frac > 0, 1 / (1 + sigma**2), abar[lo])

    def _copy_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        tables = (self.alphas_cumprod.to(device), self.sigmas.to(device))
        self._device_tables[device] = tables
        return tables

    def sigma_to_t(self, sigma: float) -> float:
        """The fractional timestep of noise level ``sigma``: linear in log sigma
        between the two neighbouring training timesteps, clipped to [0, T-1]
        (the inverse mapping k-diffusion and diffusers use)."""
        log_sigma = math.log(max(sigma, 1e-10))
        log_sigmas = self.log_sigmas
        n = log_sigmas.shape[0]
        low = int(torch.searchsorted(log_sigmas, torch.tensor(log_sigma, dtype=torch.float64), right=True)) - 1
        low = min(max(low, 0), n - 2)
        lo, hi = float(log_sigmas[low]), float(log_sigmas[low + 1])
        w = min(max((lo - log_sigma) / (lo - hi), 0.0), 1.0)
        return (1 - w) * low + w * (low + 1)

    def sigma_at(self, t: float) -> float:
        """Sigma (from the sigma-scale table) at a float timestep, interpolated
        linearly; clamped to the table's ends like ``numpy.interp``."""
        n = self.num_train_timesteps
        t = min(max(t, 0.0), n - 1.0)
        lo = int(math.floor(t))
        w = t - lo
        if w <= 0:
            return float(self.sigmas[lo])
        return (1 - w) * float(self.sigmas[lo]) + w * float(self.sigmas[min(lo + 1, n - 1)])

    def noise_timestep(self, sigma: float) -> float:
        """The (fractional) timestep at which :meth:`add_noise` gives noise level
        ``sigma`` exactly: the inverse of :meth:`sigma_at`'s linear
        interpolation, clipped to [0, T-1].

        It differs from :meth:`sigma_to_t` (log-linear, what a model is given
        for a Karras noise level) by a fraction of a timestep; img2img must
        noise an image to the sampler's level itself, hence this inverse.
        """
        sig = self.sigmas
        n = sig.shape[0]
        if sigma <= float(sig[0]):
            return 0.0
        if sigma >= float(sig[-1]):
            return float(n - 1)
        hi = int(torch.searchsorted(sig, torch.tensor(sigma, dtype=torch.float64)))
        lo = hi - 1
        s_lo, s_hi = float(sig[lo]), float(sig[hi])
        if s_hi == sigma:
            return float(hi)
        return lo + (sigma - s_lo) / (s_hi - s_lo)

    # ------------------------------------------------------------------
    # Training side
    # ------------------------------------------------------------------

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``sqrt(a) * x0 + sqrt(1 - a) * noise`` with ``a = alpha_bar(t)``, for
        integer or float timesteps ``t`` ``[B]`` (a scalar is broadcast)."""
        abar = self._abar_for(t, x0)
        return _bcast(abar.sqrt(), x0) * x0 + _bcast((1 - abar).sqrt(), x0) * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The denoiser's target: the noise, the clean sample, or the velocity
        ``v = sqrt(a) * noise - sqrt(1 - a) * x0``."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        abar = self._abar_for(t, x0)
        return _bcast(abar.sqrt(), x0) * noise - _bcast((1 - abar).sqrt(), x0) * x0

    def sample_timesteps(
        self, batch_size: int, *, generator: torch.Generator | None = None, device: Any = None
    ) -> torch.Tensor:
        """Integer timesteps in ``[0, T)`` (int64, ``[batch_size]``): uniform, or with
        ``timestep_shift = s`` the uniform ``u`` mapped to ``s u / (1 + (s - 1) u)``
        (the time shift of Esser et al. 2024), which moves draws towards noisier
        timesteps for ``s > 1`` (the median becomes ``s / (1 + s)`` of the way)."""
        gen_device = generator.device if generator is not None else "cpu"
        n = self.num_train_timesteps
        shift = float(getattr(self.settings, "timestep_shift", 1.0))
        if shift == 1.0:  # the plain draw, kept exactly as it always was
            t = torch.randint(0, n, (batch_size,), generator=generator, device=gen_device)
        else:
            u = torch.rand(batch_size, generator=generator, device=gen_device, dtype=torch.float64)
            t = time_shift(u, shift, n).long().clamp_(0, n - 1)
        return t if device is None else t.to(device)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``a / (1 - a)`` at timesteps ``t`` (float64)."""
        abar = self.alpha_bar_at(t)
        return abar / (1 - abar)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sample weights ``[B]`` (float32, on ``t``'s device).

        ``min-snr`` caps the weight of low-noise timesteps at ``snr_gamma``
        (Hang et al. 2023), expressed for the chosen target: ``min(snr, g)``
        for x0, ``min(snr, g) / snr`` for noise and ``min(snr, g) / (snr + 1)``
        for velocity.
        """
        device = t.device if isinstance(t, torch.Tensor) else None
        n = int(torch.as_tensor(t).numel())
        if self.settings.loss_weighting == "none":
            return torch.ones(n, device=device)
        gamma = self.settings.snr_gamma
        snr = self.snr(torch.as_tensor(t).reshape(-1))
        capped = torch.clamp(snr, max=gamma)
        if self.prediction_type == "epsilon":
            w = torch.clamp(gamma / snr, max=1.0)  # min(snr, g) / snr, finite at snr = 0
        elif self.prediction_type == "v_prediction":
            w = capped / (snr + 1)
        else:
            w = capped
        return w.to(device=device, dtype=torch.float32)

    def _abar_for(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        tt = torch.as_tensor(t).reshape(-1)
        if tt.numel() == 1 and like.shape[0] != 1:
            tt = tt.expand(like.shape[0])
        if tt.numel() != like.shape[0]:
            raise ValueError(f"got {tt.numel()} timesteps for a batch of {like.shape[0]}; pass one per sample")
        return self.alpha_bar_at(tt)
