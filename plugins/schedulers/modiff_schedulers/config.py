"""Settings models of the noise schedules and samplers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import modiff


class ScheduleSettings(modiff.ComponentSettings):
    """The noise schedule shared by every sampler, and the training objective."""

    num_train_timesteps: int = Field(1000, ge=1)
    beta_start: float = Field(0.00085, gt=0, lt=1)
    beta_end: float = Field(0.012, gt=0, lt=1)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"


class DDIMSettings(ScheduleSettings):
    eta: float = Field(0.0, ge=0, description="0: deterministic DDIM; 1: DDPM-like noise.")
