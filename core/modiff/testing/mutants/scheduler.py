"""Mutants of :class:`~modiff.testing.toys.ToyScheduler`."""

from __future__ import annotations

from typing import Any

import torch

from ...noise import randn
from ..toys import ToyScheduler
from .base import mutant


@mutant("scheduler", "sign or off-by-one", "test_every_prediction_type_has_the_right_target")
class VelocityTargetSignFlipped(ToyScheduler):
    """training_target for v_prediction is s(t) x0 - a(t) noise: the sign of v flipped."""

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type != "v_prediction":
            return super().training_target(x0, noise, t)
        a = self._abar(t, x0)
        return (1 - a).sqrt() * x0 - a.sqrt() * noise


@mutant("scheduler", "ignores an input", "test_oracle_model_recovers_x0_for_every_prediction_type")
class SamplerReadsEveryPredictionAsNoise(ToyScheduler):
    """sample reads the model's output as noise whatever prediction_type says."""

    def _x0_and_eps(self, pred: torch.Tensor, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x - (1 - a).sqrt() * pred) / a.sqrt(), pred


@mutant("scheduler", "global random state", "test_a_training_step_draws_only_from_its_generator")
class TimestepsFromTheGlobalGenerator(ToyScheduler):
    """sample_timesteps ignores the generator it is given and draws from torch's global state."""

    def sample_timesteps(self, batch_size: int, *, generator: Any = None, device: Any = None) -> torch.Tensor:
        return torch.randint(0, self.num_train_timesteps, (batch_size,)).to(device or "cpu")


@mutant("scheduler", "global random state", "test_a_training_step_draws_only_from_its_generator")
class TimestepsReseedTheGlobalGenerator(ToyScheduler):
    """sample_timesteps calls torch.manual_seed(0) and draws from the global state: reproducible,
    but every seed gives the same timesteps and everyone else's draws are reset."""

    def sample_timesteps(self, batch_size: int, *, generator: Any = None, device: Any = None) -> torch.Tensor:
        torch.manual_seed(0)
        return torch.randint(0, self.num_train_timesteps, (batch_size,)).to(device or "cpu")


@mutant("scheduler", "global random state", "test_a_training_step_draws_only_from_its_generator")
class TimestepJitterFromTheGlobalGenerator(ToyScheduler):
    """add_noise dithers t by one step at random, drawn from the global state."""

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        jitter = (torch.rand(t.shape) < 0.5).to(t.device)
        return super().add_noise(x0, noise, (t.long() + jitter.long()).clamp(max=self.num_train_timesteps - 1))


@mutant("scheduler", "global random state", "test_sample_is_pure_and_deterministic")
class SamplerNoiseFromTheGlobalGenerator(ToyScheduler):
    """sample draws its per-step noise with torch.randn_like, ignoring the generators."""

    def sample(self, model_fn, noise, steps, *, generator=None, callback=None, start_step=0):  # type: ignore[no-untyped-def]
        return super().sample(model_fn, noise, steps, generator=None, callback=callback, start_step=start_step)


@mutant("scheduler", "leaks across the batch", "test_batch_of_n_equals_n_single_runs")
class OneGeneratorForTheWholeBatch(ToyScheduler):
    """sample draws the whole batch's noise from the first generator, so sample i depends on the batch."""

    def sample(self, model_fn, noise, steps, *, generator=None, callback=None, start_step=0):  # type: ignore[no-untyped-def]
        first = generator[0] if isinstance(generator, (list, tuple)) else generator
        return super().sample(model_fn, noise, steps, generator=first, callback=callback, start_step=start_step)


@mutant("scheduler", "sign or off-by-one", "test_timestep_sampling_covers_the_range")
class TimestepsOffByOne(ToyScheduler):
    """sample_timesteps draws from [1, T] instead of [0, T)."""

    def sample_timesteps(self, batch_size: int, *, generator: Any = None, device: Any = None) -> torch.Tensor:
        return torch.randint(1, self.num_train_timesteps + 1, (batch_size,), generator=generator).to(device or "cpu")


@mutant("scheduler", "sign or off-by-one", "test_oracle_model_recovers_x0", "test_img2img_from_add_noise_recovers_x0")
class LastStepStopsAtTimestepZero(ToyScheduler):
    """The last step goes to the noise level of t = 0 instead of to the clean sample, leaving
    the first timestep's noise in the result."""

    def sample(self, model_fn, noise, steps, *, generator=None, callback=None, start_step=0):  # type: ignore[no-untyped-def]
        x = noise
        ts = self.timesteps(steps)
        for i in range(start_step, steps):
            t = ts[i]
            a = self.alphas_cumprod[t].to(x)
            x0, eps = self._x0_and_eps(model_fn(x, torch.full((x.shape[0],), float(t), device=x.device)), x, a)
            a_prev = self.alphas_cumprod[ts[i + 1] if i + 1 < steps else 0].to(x)  # the mistake: 0, not "clean"
            sigma = self.eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
            if self.eta:
                x = x + sigma * randn(x.shape, generator, device=x.device, dtype=x.dtype)
            if callback is not None:
                callback(i, t, x, x0)
        return x


@mutant("scheduler", "wrong dtype", "test_dtypes_follow_the_inputs")
class NoisedInputInFloat64(ToyScheduler):
    """add_noise returns float64 for float32 inputs: the float64 schedule table is not cast."""

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(t.device)[t.long()].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise


@mutant("scheduler", "wrong device", "test_outputs_follow_the_device")
class TimestepsIgnoreTheDevice(ToyScheduler):
    """sample_timesteps ignores device= and returns CPU timesteps."""

    def sample_timesteps(self, batch_size: int, *, generator: Any = None, device: Any = None) -> torch.Tensor:
        return torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator)


@mutant("scheduler", "wrong device", "test_outputs_follow_the_device")
class SamplerNoiseOnTheCpu(ToyScheduler):
    """sample adds its per-step noise as a CPU tensor, whatever the device of x."""

    def sample(self, model_fn, noise, steps, *, generator=None, callback=None, start_step=0):  # type: ignore[no-untyped-def]
        x = noise
        ts = self.timesteps(steps)
        for i in range(start_step, steps):
            t = ts[i]
            a = self.alphas_cumprod[t].to(x)
            x0, eps = self._x0_and_eps(model_fn(x, torch.full((x.shape[0],), float(t), device=x.device)), x, a)
            a_prev = self.alphas_cumprod[ts[i + 1]].to(x) if i + 1 < steps else torch.ones((), dtype=x.dtype)
            sigma = self.eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
            x = x + sigma * randn(x.shape, generator, dtype=x.dtype)  # the mistake: no device=
            if callback is not None:
                callback(i, t, x, x0)
        return x


@mutant("scheduler", "state kept between calls", "test_oracle_model_recovers_x0", "test_finite_for_any_step_count")
class TimestepsCachedAtTheFirstCall(ToyScheduler):
    """timesteps are computed for the first call's step count and reused for every later call."""

    def timesteps(self, steps: int) -> torch.Tensor:
        if not hasattr(self, "_cached"):
            self._cached = super().timesteps(steps)
        return self._cached


@mutant("scheduler", "modifies its input", "test_sample_is_pure_and_deterministic")
class SamplerUpdatesNoiseInPlace(ToyScheduler):
    """sample updates the noise tensor it was given in place (x = noise, then x.copy_(...)), so
    the caller's noise is gone."""

    def sample(self, model_fn, noise, steps, *, generator=None, callback=None, start_step=0):  # type: ignore[no-untyped-def]
        out = super().sample(model_fn, noise, steps, generator=generator, callback=callback, start_step=start_step)
        noise.copy_(out)
        return noise


@mutant("scheduler", "sign or off-by-one", "test_callback_sees_every_step", "test_img2img_from_add_noise_recovers_x0")
class CallbackCountsFromOne(ToyScheduler):
    """callback receives i + 1 as the step index."""

    def sample(self, model_fn, noise, steps, *, generator=None, callback=None, start_step=0):  # type: ignore[no-untyped-def]
        shifted = None if callback is None else (lambda i, t, x, x0: callback(i + 1, t, x, x0))
        return super().sample(model_fn, noise, steps, generator=generator, callback=shifted, start_step=start_step)


@mutant("scheduler", "wrong formula", "test_add_noise_is_variance_preserving")
class AddNoiseWithoutSquareRoots(ToyScheduler):
    """add_noise mixes a(t) x0 + (1 - a(t)) noise: alpha_bar where its square root belongs."""

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._abar(t, x0)
        return a * x0 + (1 - a) * noise


@mutant("scheduler", "wrong range or type", "test_snr_strictly_decreases")
class AlphaBarClampedAtTheEnd(ToyScheduler):
    """alpha_bar is clamped to at least 0.2 "to avoid dividing by zero": the last timesteps
    all have the same noise level."""

    def __init__(self, s):  # type: ignore[no-untyped-def]
        super().__init__(s)
        self.alphas_cumprod = self.alphas_cumprod.clamp(min=0.2)


@mutant("scheduler", "wrong range or type", "test_add_noise_at_the_first_timestep_is_nearly_x0")
class NoisyFromTheFirstTimestep(ToyScheduler):
    """The betas start at 0.02 (scaled up for a short schedule): t = 0 is already noisy."""

    def __init__(self, s):  # type: ignore[no-untyped-def]
        super().__init__(s)
        betas = torch.linspace(0.02, 0.05, s.num_train_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)


@mutant("scheduler", "sign or off-by-one", "test_training_target_is_consistent_with_add_noise")
class NoiseTargetNegated(ToyScheduler):
    """training_target for epsilon returns -noise: the noise's sign flipped."""

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -noise if self.prediction_type == "epsilon" else super().training_target(x0, noise, t)


@mutant("scheduler", "ignores an input", "test_generators_decide_the_noise")
class SamplerSeedsItsOwnGenerator(ToyScheduler):
    """sample draws its noise from torch.Generator().manual_seed(0), not from the generators it is given."""

    def sample(self, model_fn, noise, steps, *, generator=None, callback=None, start_step=0):  # type: ignore[no-untyped-def]
        own = [torch.Generator().manual_seed(0) for _ in range(noise.shape[0])]
        return super().sample(model_fn, noise, steps, generator=own, callback=callback, start_step=start_step)


@mutant("scheduler", "wrong shape", "test_training_side_shapes")
class LossWeightKeepsADimension(ToyScheduler):
    """loss_weight returns [B, 1] (keepdim) instead of [B]."""

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones(t.shape[0], 1, device=t.device)


@mutant("scheduler", "wrong range or type", "test_is_a_scheduler")
class PredictionTypeAbbreviated(ToyScheduler):
    """The prediction_type attribute says "eps" instead of "epsilon"."""

    def __init__(self, s):  # type: ignore[no-untyped-def]
        super().__init__(s)
        if self.prediction_type == "epsilon":
            self.prediction_type = "eps"


@mutant("scheduler", "sign or off-by-one", "test_sample_is_finite_and_shaped")
class OneStepDividesByZero(ToyScheduler):
    """timesteps spaces the steps by (T - 1) / (steps - 1): a single step divides by zero."""

    def timesteps(self, steps: int) -> torch.Tensor:
        spacing = (self.num_train_timesteps - 1) / torch.tensor(float(steps - 1))
        return (self.num_train_timesteps - 1 - torch.arange(steps) * spacing).round().long()
