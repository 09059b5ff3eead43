"""Noise schedules and samplers for modiff.

Registers one scheduler component per sampler: ddpm, ddim, euler,
euler-ancestral, heun, lms, dpmpp-2m, dpmpp-2m-sde and unipc. They share one
noise-schedule settings model (:class:`ScheduleSettings`), so a model trained
under one can be sampled by any other.

torch is imported inside the factories, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from . import config as cfg

#: name -> (settings model, one-line description); mirrors scheduler.SPECS
#: without importing torch.
_COMPONENTS: dict[str, tuple[type[cfg.ScheduleSettings], str]] = {
    "ddpm": (cfg.DDPMSettings, "DDPM: ancestral sampling of the original denoising diffusion model."),
    "ddim": (cfg.DDIMSettings, "DDIM: deterministic (eta = 0) or partly stochastic implicit sampling."),
    "euler": (cfg.EulerSettings, "Euler: first-order probability-flow ODE solver (optional churn)."),
    "euler-ancestral": (cfg.EulerAncestralSettings, "Euler ancestral: Euler steps with fresh noise at every step."),
    "heun": (cfg.HeunSettings, "Heun: second-order ODE solver, two model calls per step."),
    "lms": (cfg.LMSSettings, "LMS: linear multistep ODE solver (up to order 4)."),
    "dpmpp-2m": (cfg.DPMPP2MSettings, "DPM-Solver++(2M): second-order multistep ODE solver."),
    "dpmpp-2m-sde": (cfg.DPMPP2MSDESettings, "DPM-Solver++(2M) SDE: second-order multistep SDE solver."),
    "unipc": (cfg.UniPCSettings, "UniPC: unified predictor-corrector multistep solver (order 2 or more)."),
}

ScheduleSettings = cfg.ScheduleSettings
schedule_params = cfg.schedule_params


def _factory(name: str) -> Any:
    def build(settings: cfg.ScheduleSettings, context: modiff.BuildContext) -> Any:
        from .scheduler import SAMPLERS, DiffusionScheduler

        return DiffusionScheduler(SAMPLERS[name], settings)

    build.__name__ = f"build_{name.replace('-', '_')}"
    build.__doc__ = _COMPONENTS[name][1]
    return build


@modiff.hookimpl
def register_schedulers(register: modiff.Register) -> None:
    for name, (model, description) in _COMPONENTS.items():
        register(name, _factory(name), model, description=description)


__all__ = ["ScheduleSettings", "register_schedulers", "schedule_params"]
