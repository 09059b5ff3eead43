"""Swapping the sampler of a trained run: only the noise schedule and the
prediction type carry over; a sampler's own options start at its defaults.

One rule (``modiff.sampler_swap``) behind ``Pipeline.with_sampler`` (and so
``modiff generate --scheduler``), the schedulers' own ``with_sampler`` and
modiff-sd's reading of diffusers configurations.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import modiff
from modiff.assembly import build
from modiff.pipeline import Pipeline
from modiff.plugins import registry, registry_from
from modiff.sampler_swap import own_options, schedule_keys, swap
from modiff.settings import load_settings, resolve
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin

pytest.importorskip("modiff_schedulers", reason="the swap property is checked on the built-in samplers")

NAMES = ["ddpm", "ddim", "euler", "euler-ancestral", "heun", "lms", "dpmpp-2m", "dpmpp-2m-sde", "unipc", "lcm"]

#: Candidate values of every option and schedule key; a draw keeps those the model accepts.
VALUES: dict[str, list[Any]] = {
    "num_train_timesteps": [1000, 500, 64],
    "beta_schedule": ["linear", "scaled_linear", "squaredcos_cap_v2"],
    "beta_start": [0.00085, 0.0001],
    "beta_end": [0.012, 0.02],
    "prediction_type": ["epsilon", "v_prediction", "sample"],
    "rescale_betas_zero_snr": [False, True],
    "timestep_spacing": ["leading", "trailing", "linspace"],
    "steps_offset": [0, 1],
    "clip_sample": [False, True],
    "thresholding": [False, True],
    "loss_weighting": ["none", "min-snr"],
    "eta": [0.0, 0.3, 1.0],
    "variance_type": ["fixed_small", "fixed_large"],
    "set_alpha_to_one": [True, False],
    "use_karras_sigmas": [False, True],
    "s_churn": [0.0, 0.7],
    "s_tmin": [0.0, 0.1],
    "s_tmax": [None, 9.0],
    "s_noise": [1.0, 0.95],
    "order": [1, 2, 3, 4],
    "solver_type": ["midpoint", "heun", "bh1", "bh2"],
    "disable_corrector": [[], [0]],
    "original_inference_steps": [50, 8],
    "timestep_scaling": [10.0, 2.0],
}


def _model(name: str) -> type[BaseModel]:
    return registry().lookup("scheduler", name).settings_model


@st.composite
def tables(draw: st.DrawFn, model: type[BaseModel], keys: tuple[str, ...]) -> dict[str, Any]:
    """Some of ``keys`` set to values ``model`` accepts (the rest left to defaults)."""
    table: dict[str, Any] = {}
    for key in keys:
        if key in VALUES and draw(st.booleans(), label=f"set {key}"):
            value = draw(st.sampled_from(VALUES[key]), label=key)
            try:
                model.model_validate({**table, key: value})
            except ValidationError:
                continue
            table[key] = value
    return table


def pipeline(sampler: str, params: dict[str, Any]) -> Pipeline:
    """A pipeline of toy components whose run was trained with ``sampler``."""
    data = {**TOY_SETTINGS, "scheduler": {"plugin": sampler, **params}}
    reg = registry_from(ToyPlugin(), entry_points=True)
    return Pipeline(build(resolve(load_settings(base=data, environ={}), reg)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), old=st.sampled_from(NAMES), new=st.sampled_from(NAMES))
def test_after_with_sampler_own_options_are_defaults_and_the_schedule_is_the_runs(
    data: st.DataObject, old: str, new: str
) -> None:
    old_model, new_model = _model(old), _model(new)
    run = data.draw(tables(old_model, tuple(old_model.model_fields)), label="run's scheduler table")
    overrides = data.draw(tables(new_model, own_options(new_model)), label="overrides")
    pipe = pipeline(old, run)
    trained = pipe.components.settings.components["scheduler"].params
    swapped = pipe.with_sampler(new, **overrides)
    got = swapped.scheduler.settings
    assert type(got) is new_model and swapped.scheduler.name == new
    for key in own_options(new_model):
        wanted = (
            overrides[key] if key in overrides else new_model.model_fields[key].get_default(call_default_factory=True)
        )
        assert getattr(got, key) == wanted, f"{old} -> {new}: {key} = {getattr(got, key)!r}, not {wanted!r}"
    for key in schedule_keys(new_model) or ():
        assert getattr(got, key) == getattr(trained, key), f"{old} -> {new}: the run's {key} was not kept"
    assert swapped.scheduler.prediction_type == pipe.scheduler.prediction_type
    assert swapped.components is pipe.components and pipe.scheduler.name == old  # the original is untouched


@pytest.mark.parametrize(
    ("old", "run", "new", "key", "wanted"),
    [
        ("ddim", {"eta": 0.0}, "euler-ancestral", "eta", 1.0),  # carrying eta = 0 turned the noise off
        ("euler-ancestral", {"eta": 1.0}, "ddim", "eta", 0.0),  # carrying eta = 1 made DDIM stochastic
        ("unipc", {"order": 3}, "lms", "order", 4),  # UniPC's order is not LMS's
        ("euler", {"use_karras_sigmas": True}, "dpmpp-2m", "use_karras_sigmas", False),  # a sampler option
    ],
)
def test_the_reported_swaps(old: str, run: dict[str, Any], new: str, key: str, wanted: Any) -> None:
    swapped = pipeline(old, run).with_sampler(new)
    assert getattr(swapped.scheduler.settings, key) == wanted


def test_a_solver_type_of_another_sampler_does_not_break_the_swap() -> None:
    """dpmpp-2m -> unipc used to fail: 'midpoint' is no UniPC solver type."""
    swapped = pipeline("dpmpp-2m", {"solver_type": "heun"}).with_sampler("unipc")
    assert swapped.scheduler.settings.solver_type == "bh2"


def test_another_sampler_samples_the_runs_noise_schedule() -> None:
    """``generate --scheduler euler`` on a run trained with a linear schedule
    of 500 timesteps and v-prediction samples that schedule, not Euler's defaults."""
    run = {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "num_train_timesteps": 500,
           "prediction_type": "v_prediction", "timestep_spacing": "leading"}
    pipe = pipeline("ddpm", run)
    euler = pipe.with_sampler("euler").scheduler
    assert {k: getattr(euler.settings, k) for k in run} == run
    assert bool((euler.alphas_cumprod == pipe.scheduler.alphas_cumprod).all())


def test_overrides_are_checked_by_name_and_value() -> None:
    pipe = pipeline("ddim", {})
    with pytest.raises(
        modiff.ModiffError, match=r"sampler 'euler-ancestral' .*no option 'etta' \(did you mean 'eta'\?\)"
    ):
        pipe.with_sampler("euler-ancestral", etta=0.5)
    with pytest.raises(modiff.ModiffError, match="eta"):
        pipe.with_sampler("ddim", eta=3.0)
    assert pipe.with_sampler("euler", use_karras_sigmas=True).scheduler.settings.use_karras_sigmas is True


class Undeclared(modiff.ComponentSettings):
    """A third-party scheduler's settings that do not say which keys are the schedule."""

    prediction_type: str = "epsilon"
    steps_per_unit: int = 3


def test_a_model_without_schedule_keys_swaps_only_to_itself() -> None:
    current = Undeclared(steps_per_unit=5)
    assert swap(current, Undeclared) == current  # the same sampler: all of its fields are the run's
    with pytest.raises(modiff.ModiffError, match="do not declare which keys are the noise schedule"):
        swap(current, _model("ddim"))
    with pytest.raises(modiff.ModiffError, match="do not declare which keys are the noise schedule"):
        swap(_model("ddim")(), Undeclared)
