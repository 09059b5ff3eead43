"""Registration, settings validation, errors, and swapping samplers."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
from pydantic import ValidationError

import modiff
from modiff.testing import build_one
from modiff.testing.contracts.scheduler import oracle_model
from modiff_schedulers import ScheduleSettings, schedule_params
from modiff_schedulers.scheduler import SAMPLERS, build

NAMES = ["ddpm", "ddim", "euler", "euler-ancestral", "heun", "lms", "dpmpp-2m", "dpmpp-2m-sde", "unipc", "lcm"]


def test_every_sampler_is_registered_under_its_own_name() -> None:
    reg = modiff.registry()
    names = reg.names("scheduler")
    for name in NAMES:
        assert name in names
        r = reg.lookup("scheduler", name)
        assert r.distribution == "modiff-schedulers" and r.description
        assert issubclass(r.settings_model, ScheduleSettings)
    assert sorted(SAMPLERS) == sorted(NAMES)


@pytest.mark.slow  # a subprocess
def test_listing_plugins_does_not_import_torch() -> None:
    code = "import sys, modiff_schedulers; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", NAMES)
def test_factories_build_from_settings_tables(name: str) -> None:
    s = build_one("scheduler", name, {"prediction_type": "v_prediction", "timestep_spacing": "leading"})
    assert s.name == name and s.prediction_type == "v_prediction"
    assert isinstance(s, modiff.Scheduler)


def test_unknown_keys_and_bad_values_are_errors() -> None:
    with pytest.raises(ValidationError, match="use_karras_sigmas"):
        build_one("scheduler", "ddim", {"use_karras_sigmas": True})  # ddim has no Karras grid
    with pytest.raises(ValidationError, match="beta_schedule"):
        build_one("scheduler", "euler", {"beta_schedule": "cosine"})
    with pytest.raises(ValidationError, match="eta"):
        build_one("scheduler", "ddim", {"eta": 2.0})
    with pytest.raises(ValidationError, match="order"):
        build_one("scheduler", "unipc", {"order": 1})
    with pytest.raises(ValidationError, match="v_prediction"):
        build_one("scheduler", "euler", {"rescale_betas_zero_snr": True})  # epsilon at zero SNR


@pytest.mark.parametrize("name", NAMES)
def test_sample_argument_errors(name: str) -> None:
    s = build(name, {"num_train_timesteps": 50})
    noise = torch.randn(2, 1, 2, 2)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="steps must be an integer from 1 to num_train_timesteps = 50"):
        s.sample(zero, noise, 0)
    with pytest.raises(ValueError, match="num_train_timesteps = 50"):
        s.sample(zero, noise, 51)
    with pytest.raises(ValueError, match="start_step must be an integer from 0 to steps - 1 = 4"):
        s.sample(zero, noise, 5, start_step=5)
    with pytest.raises(ValueError, match="3 generators for a batch of 2"):
        s.sample(zero, noise, 5, generator=modiff.generators([1, 2, 3]))
    with pytest.raises(ValueError, match=r"model_fn returned shape \(2, 2, 2, 2\)"):
        s.sample(lambda x, t: torch.zeros(2, 2, 2, 2), noise, 5)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 49\]"):
        s.add_noise(noise, noise, torch.tensor([0, 50]))


def test_model_receives_float_timesteps_per_sample() -> None:
    s = build("euler", {"timestep_spacing": "linspace"})
    seen: list[torch.Tensor] = []
    s.sample(lambda x, t: seen.append(t) or torch.zeros_like(x), torch.randn(3, 1, 2, 2), 7)
    assert all(t.shape == (3,) and t.dtype == torch.float32 for t in seen)
    assert any(float(t[0]) != int(t[0]) for t in seen)  # linspace: fractional timesteps


def test_schedule_params_are_shared_by_every_sampler() -> None:
    """A table written for one sampler keeps its schedule for any other."""
    trained = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "prediction_type": "v_prediction",
               "num_train_timesteps": 500, "eta": 0.3}
    base = build("ddim", trained)
    params = schedule_params(base.settings)
    assert "eta" not in params and params["beta_schedule"] == "linear"
    x0 = torch.randn(2, 3, 4, 4)
    noise = torch.randn(2, 3, 4, 4)
    t = torch.tensor([3, 400])
    for name in NAMES:
        other = base.with_sampler(name)
        assert other.name == name
        torch.testing.assert_close(other.alphas_cumprod, base.alphas_cumprod, rtol=0, atol=0)
        torch.testing.assert_close(other.add_noise(x0, noise, t), base.add_noise(x0, noise, t), rtol=0, atol=0)
        torch.testing.assert_close(
            other.training_target(x0, noise, t), base.training_target(x0, noise, t), rtol=0, atol=0
        )
        built = build_one("scheduler", name, schedule_params(base.settings))  # what the pipeline does
        assert built.settings == other.settings


def test_a_scheduler_swap_keeps_the_schedule_and_resets_the_samplers_own_options() -> None:
    """The scheduler object's ``with_sampler`` is the pipeline's rule
    (``modiff.sampler_swap``): eta, order and Karras sigmas are not carried."""
    ddim = build("ddim", {"eta": 0.0, "beta_schedule": "linear", "prediction_type": "v_prediction"})
    ancestral = ddim.with_sampler("euler-ancestral")
    assert ancestral.settings.eta == 1.0 and ancestral.stochastic
    assert ancestral.settings.beta_schedule == "linear" and ancestral.prediction_type == "v_prediction"
    assert build("unipc", {"order": 3}).with_sampler("lms").settings.order == 4
    assert build("euler", {"use_karras_sigmas": True}).with_sampler("heun").settings.use_karras_sigmas is False
    assert build("dpmpp-2m", {"solver_type": "heun"}).with_sampler("unipc").settings.solver_type == "bh2"
    assert build("ddim").with_sampler("dpmpp-2m", use_karras_sigmas=True).settings.use_karras_sigmas is True


def test_registrations_are_the_sampler_specs() -> None:
    """Name, settings model and description of every registration come from the one table."""
    from modiff_schedulers.specs import SPECS

    reg = modiff.registry_from(__import__("modiff_schedulers"))
    got = {r.name: (r.settings_model, r.description) for r in reg.all("scheduler")}
    assert got == {s.name: (s.settings_model, s.description) for s in SPECS}


def test_swapping_samplers_at_generation_time_samples_the_same_model() -> None:
    """A model trained under ddpm is sampled by every deterministic sampler of
    the same schedule: with an exact model they all return its x0."""
    trained = build("ddpm", {"prediction_type": "epsilon"})
    x0 = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    model = oracle_model(trained, x0)  # the "trained network": knows the schedule only through add_noise
    noise = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    for name in ("ddim", "euler", "heun", "lms", "dpmpp-2m", "unipc"):
        out = trained.with_sampler(name).sample(model, noise, 20)
        assert float((out - x0).abs().max()) < 1e-6, name
    with pytest.raises(ValueError, match="unknown sampler 'eulr'"):
        trained.with_sampler("eulr")


def test_stochastic_flag() -> None:
    flags: dict[str, Any] = {
        "ddpm": ({}, True), "ddim": ({"eta": 0.1}, True), "euler": ({"s_churn": 0.5}, True),
        "euler-ancestral": ({}, True), "dpmpp-2m-sde": ({}, True), "heun": ({}, False), "unipc": ({}, False),
    }
    for name, (opts, stochastic) in flags.items():
        assert build(name, opts).stochastic is stochastic
    assert build("ddim").stochastic is False and build("euler-ancestral", {"eta": 0.0}).stochastic is False


# ---------------------------------------------------------------- timestep shift


def test_timestep_shift_one_is_the_plain_uniform_draw() -> None:
    plain = build_one("scheduler", "ddim", {})
    same = build_one("scheduler", "ddim", {"timestep_shift": 1.0})
    a = plain.sample_timesteps(64, generator=torch.Generator().manual_seed(3))
    b = same.sample_timesteps(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(a, torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("shift", [0.5, 3.0])
def test_timestep_shift_moves_the_draws(shift: float) -> None:
    s = build_one("scheduler", "unipc", {"timestep_shift": shift})
    t = s.sample_timesteps(20_000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) <= 999
    expected_median = 1000 * shift / (1 + shift)  # the shift maps u = 1/2 to s / (1 + s)
    assert abs(float(t.float().median()) - expected_median) < 15
    again = s.sample_timesteps(20_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, again), "deterministic for a seeded generator"


@pytest.mark.parametrize("value", [0, -1, 101])
def test_timestep_shift_must_be_positive_and_sane(value: float) -> None:
    with pytest.raises(ValidationError, match="timestep_shift"):
        ScheduleSettings(timestep_shift=value)
