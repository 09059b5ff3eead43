"""Noise schedules and samplers for modiff.

Registers one scheduler component per sampler of :data:`specs.SPECS` (ddpm,
ddim, euler, euler-ancestral, heun, lms, dpmpp-2m, dpmpp-2m-sde, unipc, lcm):
name, settings model and description come from that one table. They share
one noise-schedule settings model (:class:`ScheduleSettings`), so a model
trained under one can be sampled by any other.

torch is imported inside the factories, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from . import config as cfg
from .specs import SPECS, SamplerSpec

ScheduleSettings = cfg.ScheduleSettings
schedule_params = cfg.schedule_params


def _factory(spec: SamplerSpec) -> Any:
    def build(settings: cfg.ScheduleSettings, context: modiff.BuildContext) -> Any:
        from .scheduler import DiffusionScheduler

        return DiffusionScheduler(spec, settings)

    build.__name__ = f"build_{spec.name.replace('-', '_')}"
    build.__doc__ = spec.description
    return build


@modiff.hookimpl
def register_schedulers(register: modiff.Register) -> None:
    for spec in SPECS:
        register(spec.name, _factory(spec), spec.settings_model, description=spec.description)


__all__ = ["ScheduleSettings", "register_schedulers", "schedule_params"]
