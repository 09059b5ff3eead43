"""Noise schedules and samplers for modiff.

Heavy imports (torch) happen inside the factories, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .config import DDIMSettings, ScheduleSettings


def build_ddpm(settings: ScheduleSettings, context: Any) -> Any:
    """DDPM: the ancestral sampler of the original denoising diffusion paper."""
    from .samplers import DDPMScheduler

    return DDPMScheduler(settings)


def build_ddim(settings: DDIMSettings, context: Any) -> Any:
    """DDIM: deterministic (eta = 0) or partly stochastic implicit sampling."""
    from .samplers import DDIMScheduler

    return DDIMScheduler(settings)


@modiff.hookimpl
def register_schedulers(register: Any) -> None:
    register("ddpm", build_ddpm, ScheduleSettings)
    register("ddim", build_ddim, DDIMSettings)
