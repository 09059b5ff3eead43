"""The Scheduler object: a noise schedule, settings, and one pure sampler over it.

:class:`DiffusionScheduler` holds the schedule (training side, from
:class:`NoiseSchedule`) and a :class:`SamplerSpec` naming the pure sampling
function. ``sample`` computes the grid of timesteps and noise levels for the
number of steps, wraps ``model_fn``, calls the function, and returns; nothing
survives the call, so one object can serve concurrent generations and any
sampler of the same schedule can replace it.

Scales. ``model_fn`` always sees the variance-preserving input it was trained
on, ``x_t = sqrt(a) * x0 + sqrt(1 - a) * noise``. DDPM, DDIM and LCM step on
that scale; the other samplers step on the sigma scale ``x = x_t / sqrt(a) = x0 +
sigma * noise`` and convert at the model boundary. The ``noise`` given to
``sample`` is on the VP scale: for ``start_step = 0`` plain unit-variance
noise (the VP sample at the first timestep, where ``a`` is ~0), which the
sigma samplers multiply by ``sqrt(1 + sigma_max^2)`` (their
``init_noise_sigma``); for ``start_step > 0`` the output of
``add_noise(x0, noise, timesteps(steps)[start_step])``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from modiff import randn
from modiff.sampler_swap import swap

from . import config as cfg
from .schedule import NoiseSchedule
from .spacing import consistency_timesteps, karras_sigmas, spaced_timesteps
from .specs import SAMPLERS, SamplerSpec
from .wrappers import SigmaDenoiser, TimeTable, VPDenoiser, time_dtype

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


@dataclass(frozen=True)
class Plan:
    """The grid ``sample`` walks for a number of steps.

    ``timesteps[i]`` is given to the model at step ``i``. For VP samplers
    ``levels`` holds ``alpha_bar`` per timestep plus the final one; for sigma
    samplers it holds sigma per timestep plus the final 0.
    ``noise_timesteps[i]`` is the timestep at which ``add_noise`` gives step
    ``i``'s noise level: ``timesteps[i]`` itself, except with Karras noise
    levels, whose model timesteps are log-linear (and, for the multistep
    solvers, rounded) while ``add_noise`` interpolates linearly.
    """

    timesteps: list[float]
    levels: list[float] = field(default_factory=list)
    noise_timesteps: list[float] = field(default_factory=list)


class DiffusionScheduler(NoiseSchedule):
    """One noise schedule and one sampler; satisfies :class:`modiff.protocols.Scheduler`."""

    def __init__(self, spec: SamplerSpec, settings: cfg.ScheduleSettings):
        if not isinstance(settings, spec.settings_model):
            data = settings.model_dump() if hasattr(settings, "model_dump") else settings
            settings = spec.settings_model.model_validate(data)
        super().__init__(settings)
        self.spec = spec
        self.name = spec.name
        self._function = spec.load()

    def __repr__(self) -> str:
        fields = type(self.settings).model_fields
        changed = {k: v for k, v in self.settings.model_dump().items() if v != fields[k].default}
        return f"{type(self).__name__}({self.name!r}, {changed})"

    @property
    def stochastic(self) -> bool:
        """Whether ``sample`` draws random numbers (and so needs a generator to repeat)."""
        return self.spec.stochastic(self.settings)

    # ------------------------------------------------------------------
    # Grid
    # ------------------------------------------------------------------

    def plan(self, steps: int) -> Plan:
        """Timesteps and noise levels for ``steps`` steps."""
        s = self.settings
        karras = bool(getattr(s, "use_karras_sigmas", False))
        if self.spec.family == "consistency":
            ts = consistency_timesteps(s.num_train_timesteps, steps, s.original_inference_steps, s.inference_shift)
        else:
            ts = spaced_timesteps(
                s.num_train_timesteps, steps, s.timestep_spacing, s.steps_offset, self.spec.family, check=not karras
            )
        if self.spec.scale == "vp":
            abar = self.alphas_cumprod
            final = 1.0 if getattr(s, "set_alpha_to_one", True) else float(abar[0])
            return Plan(ts, [float(abar[int(t)]) for t in ts] + [final], list(ts))
        if self.spec.family == "multistep":
            if not karras:
                sigmas = [float(self.sigmas[int(t)]) for t in ts]
            else:
                sigmas = karras_sigmas(float(self.sigmas[0]), float(self.sigmas[-1]), steps)
                ts = [self.sigma_to_t(x) for x in sigmas]
                rounding = self.spec.karras_timestep_rounding(s)
                if rounding == "round":
                    ts = [float(round(t)) for t in ts]
                elif rounding == "floor":
                    ts = [float(math.floor(t)) for t in ts]
        else:
            sigmas = [self.sigma_at(t) for t in ts]  # clamped to sigma(T - 1) beyond the table
            if karras:
                sigmas = karras_sigmas(sigmas[-1], sigmas[0], steps)
                ts = [self.sigma_to_t(x) for x in sigmas]
        noise_ts = [self.noise_timestep(x) for x in sigmas] if karras else list(ts)
        return Plan(ts, sigmas + [0.0], noise_ts)

    def timesteps(self, steps: int) -> torch.Tensor:
        """The timestep of each step's noise level, first to last (float64).

        ``add_noise`` at ``timesteps(steps)[i]`` gives exactly the noise level
        step ``i`` starts from, which is what ``start_step = i`` (img2img)
        expects. The model is given these timesteps too, except with Karras
        noise levels: it then gets the log-linear timestep of each level
        (rounded, for the multistep solvers), as diffusers does, which
        :meth:`model_timesteps` returns.
        """
        return torch.tensor(self.plan(steps).noise_timesteps, dtype=torch.float64)

    def model_timesteps(self, steps: int) -> torch.Tensor:
        """The timesteps ``sample`` gives the model, one per step (float64);
        diffusers' ``scheduler.timesteps`` after ``set_timesteps(steps)``."""
        return torch.tensor(self.plan(steps).timesteps, dtype=torch.float64)

    def sigmas_for(self, steps: int) -> torch.Tensor:
        """Noise levels per step plus the final one (sigma scale; for DDPM and
        DDIM converted from ``alpha_bar``)."""
        plan = self.plan(steps)
        if self.spec.scale == "sigma":
            return torch.tensor(plan.levels, dtype=torch.float64)
        a = torch.tensor(plan.levels, dtype=torch.float64)
        return ((1 - a) / a).sqrt()

    # ------------------------------------------------------------------
    # Sampling
    # ------------------------------------------------------------------

    def sample(
        self,
        model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        noise: torch.Tensor,
        steps: int,
        *,
        generator: GeneratorArg = None,
        callback: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
        start_step: int = 0,
    ) -> torch.Tensor:
        """Run the sampler and return the clean sample (same shape and dtype as ``noise``).

        Args:
            model_fn: ``(x_t, t) -> prediction`` with ``x_t`` on the VP scale and
                ``t`` float timesteps ``[B]`` (fractional for some grids).
            noise: unit-variance noise ``[B, ...]`` (``start_step = 0``) or
                ``add_noise(x0, noise, timesteps(steps)[start_step])``.
            steps: number of sampler steps, 1 to ``num_train_timesteps``.
            generator: one generator per sample (sample ``i`` then draws only
                from ``generator[i]``, so it does not depend on its batch), a
                single generator for the whole batch, or ``None`` for torch's
                global one. Noise is drawn in float32 and cast, so float32 and
                float64 runs see the same numbers.
            callback: ``callback(i, t, x_t, x0)`` once per step, with the
                timesteps ``t`` ``[B]`` and VP-scale input ``x_t`` the model
                was given at step ``i`` (an index into ``timesteps(steps)``)
                and the resulting x0 estimate.
            start_step: steps to skip (img2img); ``noise`` is then the
                partially noised image, see above.
        """
        if not isinstance(noise, torch.Tensor) or not noise.is_floating_point() or noise.dim() < 1:
            raise ValueError("noise must be a floating-point tensor [B, ...]")
        plan = self.plan(steps)
        if not isinstance(start_step, int) or not 0 <= start_step < steps:
            raise ValueError(f"start_step must be an integer from 0 to steps - 1 = {steps - 1}; got {start_step!r}")
        batch = noise.shape[0]
        if generator is not None and not isinstance(generator, torch.Generator):
            generator = list(generator)
            if len(generator) != batch:
                raise ValueError(f"got {len(generator)} generators for a batch of {batch}; pass one per sample")

        def draw(*_: Any) -> torch.Tensor:
            return randn(noise.shape, generator, device=noise.device, dtype=torch.float32).to(noise.dtype)

        options = self.spec.options(self.settings)
        ts = plan.timesteps[start_step:]
        times = TimeTable(ts, noise)  # the model's `t` for every step, on the device before the loop
        if self.spec.scale == "vp":
            levels = plan.levels[start_step:]
            cb = None
            if callback is not None:
                cb = lambda i, t, x, x0: callback(start_step + i, self._t(t, x), x, x0)  # noqa: E731
            model = VPDenoiser(model_fn, self.settings, times)
            return self._function(model, noise, ts, levels, noise_sampler=draw, callback=cb, **options)

        sigmas = list(plan.levels[start_step:])
        if start_step > 0:
            # `noise` was made by add_noise at timesteps(steps)[start_step]; start from exactly that noise level.
            sigmas[0] = self.sigma_at(plan.noise_timesteps[start_step])
        timestep_of = {sig: t for sig, t in zip(sigmas, ts, strict=False)}
        denoiser = SigmaDenoiser(model_fn, self.settings, timestep_of, self.sigma_to_t, times)
        x = noise * math.sqrt(1 + sigmas[0] ** 2)
        cb = None
        if callback is not None:

            def cb(i: int, sigma: float, x: torch.Tensor, denoised: torch.Tensor) -> None:
                t = self._t(denoiser.timestep(sigma), x)
                callback(start_step + i, t, x * (1 / math.sqrt(1 + sigma**2)), denoised)

        return self._function(denoiser, x, sigmas, noise_sampler=draw, callback=cb, **options)

    @staticmethod
    def _t(t: float, like: torch.Tensor) -> torch.Tensor:
        return torch.full((like.shape[0],), t, dtype=time_dtype(like), device=like.device)

    # ------------------------------------------------------------------
    # Swapping
    # ------------------------------------------------------------------

    def schedule_params(self) -> dict[str, Any]:
        """The noise-schedule keys of this scheduler's settings (shared by every sampler)."""
        return cfg.schedule_params(self.settings)

    def with_sampler(self, name: str, **options: Any) -> DiffusionScheduler:
        """Another sampler over the same noise schedule, e.g.
        ``scheduler.with_sampler("euler", use_karras_sigmas=True)``.

        As ``Pipeline.with_sampler`` (one rule, :func:`modiff.sampler_swap.swap`):
        the schedule and prediction type carry over, the new sampler's own
        options start at its defaults unless given in ``options``.
        """
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
        spec = SAMPLERS[name]
        return DiffusionScheduler(spec, swap(self.settings, spec.settings_model, options))


def build(
    name: str, settings: cfg.ScheduleSettings | dict[str, Any] | None = None, **overrides: Any
) -> DiffusionScheduler:
    """A scheduler by sampler name, from a settings model or a settings table."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    spec = SAMPLERS[name]
    data = settings.model_dump() if hasattr(settings, "model_dump") else dict(settings or {})
    return DiffusionScheduler(spec, spec.settings_model(**{**data, **overrides}))
