"""Skeleton of a scheduler: a cosine noise schedule with a DDIM sampler."""

from __future__ import annotations

from . import RoleTemplate

SETTINGS = r'''"""Settings of ``$name`` (pydantic only: ``modiff plugins`` imports this module)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import modiff


class $settings_class(modiff.ComponentSettings):
    """The keys a ``[scheduler]`` table with ``plugin = "$name"`` accepts."""

    num_train_timesteps: int = Field(1000, ge=2, description="Timesteps of the training scale.")
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = Field(
        "epsilon", description="What the denoiser learns to predict: the noise, the velocity or the clean sample."
    )
    offset: float = Field(
        0.008, ge=0.0, le=1.0, description="The cosine schedule's small offset s (Nichol & Dhariwal)."
    )
'''

COMPONENT = r'''"""A cosine noise schedule (training side) and a DDIM sampler over it.

The schedule is continuous, ``alpha_bar(t) = f(u) / f(0)`` with
``f(u) = cos((u + s) / (1 + s) * pi / 2) ** 2`` at ``u = (t + 1) / (T + 1)``,
so fractional timesteps need no interpolation. Mapping ``t`` into the open
interval ``(0, 1)`` leaves a little noise at ``t = 0`` and a little signal at
``t = T - 1``: the signal-to-noise ratio is finite everywhere and falls
strictly, and no step ever divides by zero. The sampler is DDIM with ``eta = 0``:
deterministic, so it ignores ``generator``, and it keeps nothing between
calls (``sample`` is a pure function of its arguments), which is what lets
modiff sample one trained model with any sampler of the same schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

import modiff
from modiff.protocols import ModelFn, SampleCallback

from .settings import $settings_class


class CosineDDIM:
    def __init__(self, settings: $settings_class):
        self.num_train_timesteps = settings.num_train_timesteps
        self.prediction_type = settings.prediction_type
        self.offset = settings.offset

    # -- the schedule ------------------------------------------------------

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """Signal fraction ``alpha_bar`` at float timesteps ``t`` (float64 for accuracy)."""
        s = self.offset

        def f(u: torch.Tensor) -> torch.Tensor:
            return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        u = (t.double().clamp(0, self.num_train_timesteps - 1) + 1) / (self.num_train_timesteps + 1)
        return f(u) / f(torch.zeros((), dtype=torch.float64))

    def _coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sqrt(alpha_bar)`` and ``sqrt(1 - alpha_bar)`` shaped to broadcast over ``like``."""
        a = self.alpha_bar(t.to("cpu")).to(device=like.device, dtype=like.dtype)
        shape = (-1, *([1] * (like.dim() - 1)))
        return a.sqrt().view(shape), (1 - a).sqrt().view(shape)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, b = self._coefficients(t, x0)
        return a * x0 + b * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        a, b = self._coefficients(t, x0)
        return a * noise - b * x0  # v = sqrt(a) * noise - sqrt(1 - a) * x0

    def sample_timesteps(
        self, batch_size: int, *, generator: torch.Generator | None = None, device: Any = None
    ) -> torch.Tensor:
        t = torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator)
        return t.to(device) if device is not None else t

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones(t.shape[0], device=t.device)

    # -- the sampler -------------------------------------------------------

    def timesteps(self, steps: int) -> torch.Tensor:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        return torch.linspace(self.num_train_timesteps - 1, 0, steps)

    def _x0_and_eps(
        self, pred: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean sample and the noise implied by a prediction at ``x``."""
        if self.prediction_type == "epsilon":
            return (x - b * pred) / a, pred
        if self.prediction_type == "sample":
            return pred, (x - a * pred) / b
        return a * x - b * pred, b * x + a * pred

    def sample(
        self,
        model_fn: ModelFn,
        noise: torch.Tensor,
        steps: int,
        *,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        callback: SampleCallback | None = None,
        start_step: int = 0,
    ) -> torch.Tensor:
        ts = self.timesteps(steps)
        x = noise
        for i in range(start_step, steps):
            t = ts[i]
            a, b = self._coefficients(t.expand(x.shape[0]), x)
            pred = model_fn(x, t.to(x.device).expand(x.shape[0]))
            x0, eps = self._x0_and_eps(pred.to(x.dtype), x, a, b)
            if i + 1 < steps:
                a_next, b_next = self._coefficients(ts[i + 1].expand(x.shape[0]), x)
                x = a_next * x0 + b_next * eps
            else:
                x = x0
            if callback is not None:
                callback(i, t, x, x0)
        return x


def build_component(settings: $settings_class, context: modiff.BuildContext) -> CosineDDIM:
    return CosineDDIM(settings)
'''

TESTS = r"""

class $test_class($contract):
    plugin = "$name"
    settings: ClassVar[dict[str, Any]] = {"num_train_timesteps": 1000}
    stochastic = False  # DDIM with eta = 0 draws no random numbers
    # The contract tests every prediction type the settings accept (epsilon, v_prediction,
    # sample): the training target of each, and that an exact model leads the sampler to x0.

    def registry(self) -> modiff.Registry:
        return REGISTRY


def _scheduler(**settings: Any) -> Any:
    return ${test_class}().build(**settings)


def test_signal_fades_from_almost_all_to_almost_none() -> None:
    s = _scheduler()
    a = s.alpha_bar(torch.tensor([0.0, 500.0, 999.0]))
    assert a[0] > 0.999 and 0.3 < a[1] < 0.7 and 0 < a[2] < 1e-3
    # fractional timesteps lie between their neighbours
    bars = [float(s.alpha_bar(torch.tensor([t]))[0]) for t in (0.0, 0.5, 1.0)]
    assert bars[0] > bars[1] > bars[2]
"""

TEMPLATE = RoleTemplate(
    role="scheduler",
    hook="register_schedulers",
    contract="SchedulerContract",
    summary="a cosine noise schedule sampled with deterministic DDIM",
    settings_class="CosineDDIMSettings",
    settings=SETTINGS,
    component=COMPONENT,
    tests=TESTS,
    test_imports=("import torch",),
)
