"""The samplers: one table, read by the registration hook and by the scheduler.

Each :class:`SamplerSpec` says everything that distinguishes one registered
sampler from another: its name, settings model and description (what
``modiff plugins`` lists), the pure sampling function (named, imported on
first use, so that registering stays free of torch), the scale and timestep
grid it works on, and how its settings become the function's options. Adding
a sampler is one entry here.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import config as cfg
from .spacing import Family


@dataclass(frozen=True)
class SamplerSpec:
    """What distinguishes one registered sampler from another.

    Attributes:
        name: the registered component name.
        settings_model: its pydantic settings (schedule keys + options).
        description: the line ``modiff plugins`` shows.
        function: ``"module:function"`` of the pure sampling function, relative
            to this package; :meth:`load` imports it.
        scale: ``"vp"`` (DDPM, DDIM) or ``"sigma"``.
        family: which timestep grid it uses (see :mod:`.spacing`).
        options: settings -> keyword arguments of ``function``.
        stochastic: settings -> whether ``sample`` draws random numbers.
        karras_timestep_rounding: settings -> ``"round"``, ``"floor"`` or
            ``None``: how the timesteps of Karras noise levels are made
            integers before the model sees them, as diffusers' multistep
            solvers do (the sigma itself is not changed).
    """

    name: str
    settings_model: type[cfg.ScheduleSettings]
    description: str
    function: str
    scale: Literal["vp", "sigma"]
    family: Family
    options: Callable[[Any], dict[str, Any]] = lambda s: {}
    stochastic: Callable[[Any], bool] = lambda s: False
    karras_timestep_rounding: Callable[[Any], str | None] = lambda s: None

    def load(self) -> Callable[..., Any]:
        """The sampling function (imports torch on first use)."""
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), attr)


def _karras_rounding_dpm(s: Any) -> str:
    # diffusers' DPMSolverMultistepScheduler rounds Karras timesteps, except
    # for the cosine schedule where its cast to int64 truncates them; UniPC
    # always rounds.
    return "floor" if s.beta_schedule == "squaredcos_cap_v2" else "round"


SPECS: tuple[SamplerSpec, ...] = (
    SamplerSpec(
        "ddpm", cfg.DDPMSettings, "DDPM: ancestral sampling of the original denoising diffusion model.",
        "vp:sample_ddpm", "vp", "discrete",
        options=lambda s: {"variance_type": s.variance_type},
        stochastic=lambda s: True,
    ),
    SamplerSpec(
        "ddim", cfg.DDIMSettings, "DDIM: deterministic (eta = 0) or partly stochastic implicit sampling.",
        "vp:sample_ddim", "vp", "discrete",
        options=lambda s: {"eta": s.eta},
        stochastic=lambda s: s.eta > 0,
    ),
    SamplerSpec(
        "euler", cfg.EulerSettings, "Euler: first-order probability-flow ODE solver (optional churn).",
        "k_samplers:sample_euler", "sigma", "continuous",
        options=lambda s: {
            "s_churn": s.s_churn, "s_tmin": s.s_tmin,
            "s_tmax": math.inf if s.s_tmax is None else s.s_tmax, "s_noise": s.s_noise,
        },
        stochastic=lambda s: s.s_churn > 0,
    ),
    SamplerSpec(
        "euler-ancestral", cfg.EulerAncestralSettings, "Euler ancestral: Euler steps with fresh noise at every step.",
        "k_samplers:sample_euler_ancestral", "sigma", "continuous",
        options=lambda s: {"eta": s.eta, "s_noise": s.s_noise},
        stochastic=lambda s: s.eta > 0,
    ),
    SamplerSpec(
        "heun", cfg.HeunSettings, "Heun: second-order ODE solver, two model calls per step.",
        "k_samplers:sample_heun", "sigma", "continuous",
    ),
    SamplerSpec(
        "lms", cfg.LMSSettings, "LMS: linear multistep ODE solver (up to order 4).",
        "k_samplers:sample_lms", "sigma", "continuous",
        options=lambda s: {"order": s.order},
    ),
    SamplerSpec(
        "dpmpp-2m", cfg.DPMPP2MSettings, "DPM-Solver++(2M): second-order multistep ODE solver.",
        "multistep:sample_dpmpp_2m", "sigma", "multistep",
        options=lambda s: {"solver_type": s.solver_type},
        karras_timestep_rounding=_karras_rounding_dpm,
    ),
    SamplerSpec(
        "dpmpp-2m-sde", cfg.DPMPP2MSDESettings, "DPM-Solver++(2M) SDE: second-order multistep SDE solver.",
        "multistep:sample_dpmpp_2m_sde", "sigma", "multistep",
        options=lambda s: {"solver_type": s.solver_type, "eta": s.eta, "s_noise": s.s_noise},
        stochastic=lambda s: s.eta > 0,
        karras_timestep_rounding=_karras_rounding_dpm,
    ),
    SamplerSpec(
        "unipc", cfg.UniPCSettings, "UniPC: unified predictor-corrector multistep solver (order 2 or more).",
        "multistep:sample_unipc", "sigma", "multistep",
        options=lambda s: {
            "order": s.order, "solver_type": s.solver_type, "disable_corrector": tuple(s.disable_corrector),
        },
        karras_timestep_rounding=lambda s: "round",
    ),
    SamplerSpec(
        "lcm", cfg.LCMSettings, "LCM: multistep consistency sampling for consistency-distilled models (2 to 8 steps).",
        "vp:sample_lcm", "vp", "consistency",
        options=lambda s: {"timestep_scaling": s.timestep_scaling},
        stochastic=lambda s: True,
    ),
)

SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in SPECS}
