"""Hypothesis properties of the schedule and the samplers, over their options.

The contract (``test_contract.py``) checks each sampler at a few settings;
here the settings themselves are drawn.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modiff
from modiff.testing.contracts.scheduler import oracle_model
from modiff_schedulers.config import ScheduleSettings
from modiff_schedulers.schedule import NoiseSchedule
from modiff_schedulers.scheduler import SAMPLERS, build

# model_fn is a pure function fixture, safe to share across examples
_CHECKS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
FAST = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=_CHECKS)
SLOW = settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=_CHECKS)

NAMES = list(SAMPLERS)
DETERMINISTIC = ["ddim", "euler", "heun", "lms", "dpmpp-2m", "unipc"]
STOCHASTIC: dict[str, dict[str, Any]] = {
    "ddpm": {},
    "ddim": {"eta": 0.7},
    "euler": {"s_churn": 2.0},
    "euler-ancestral": {},
    "dpmpp-2m-sde": {},
    "lcm": {},
}


@st.composite
def schedule_settings(draw: st.DrawFn) -> dict[str, Any]:
    """Realistic noise schedules: betas up to 0.05 (DDPM uses 0.02) and
    2 to 2000 training timesteps."""
    beta_start = draw(st.floats(1e-5, 1e-2))
    return {
        "num_train_timesteps": draw(st.integers(2, 2000)),
        "beta_schedule": draw(st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"])),
        "beta_start": beta_start,
        "beta_end": draw(st.floats(beta_start, 0.05)),
        "rescale_betas_zero_snr": draw(st.booleans()),
        "prediction_type": draw(st.sampled_from(["v_prediction", "sample"])),
    }


@st.composite
def sampler_options(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """Every option that changes a sampler's grid or its model conversion."""
    pred = draw(st.sampled_from(["epsilon", "v_prediction", "sample"]))
    opts: dict[str, Any] = {
        "prediction_type": pred,
        "beta_schedule": draw(st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"])),
        "timestep_spacing": draw(st.sampled_from(["leading", "trailing", "linspace"])),
        "rescale_betas_zero_snr": pred != "epsilon" and draw(st.booleans()),
    }
    if SAMPLERS[name].scale == "sigma":
        opts["use_karras_sigmas"] = draw(st.booleans())
    return opts


# ----------------------------------------------------------------------
# The schedule
# ----------------------------------------------------------------------


@FAST
@given(params=schedule_settings())
def test_snr_strictly_decreases(params: dict[str, Any]) -> None:
    s = NoiseSchedule(ScheduleSettings(**params))
    t = torch.arange(s.num_train_timesteps)
    snr = s.snr(t)
    assert bool((snr[1:] < snr[:-1]).all())
    assert (float(snr[-1]) == 0.0) == params["rescale_betas_zero_snr"]
    # and on the sigma scale the noise levels rise strictly (finite even at zero SNR)
    assert bool((s.sigmas[1:] > s.sigmas[:-1]).all()) and bool(torch.isfinite(s.sigmas).all())


@FAST
@given(params=schedule_settings(), seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3))
def test_add_noise_at_the_first_timestep_is_x0_within_beta_0(params: dict[str, Any], seed: int, scale: float) -> None:
    """add_noise(x0, n, 0) = sqrt(1 - beta_0) x0 + sqrt(beta_0) n: x0 up to the
    schedule's first beta, |x_0 - x0| <= (1 - sqrt(1 - b0)) |x0| + sqrt(b0) |n|
    (+ float64 rounding); b0 is beta_start (linear schedules) or ~4e-5 (cosine)."""
    s = NoiseSchedule(ScheduleSettings(**params))
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) * scale
    n = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    b0 = float(s.betas[0])
    if params["beta_schedule"] != "squaredcos_cap_v2":
        assert b0 == pytest.approx(params["beta_start"], rel=1e-12)
    got = s.add_noise(x0, n, torch.zeros(2, dtype=torch.long))
    bound = (1 - math.sqrt(1 - b0)) * x0.abs() + math.sqrt(b0) * n.abs() + 1e-12 * (1 + x0.abs())
    assert bool(((got - x0).abs() <= bound).all())
    # with no noise, only the signal scale sqrt(1 - b0) is left
    torch.testing.assert_close(
        s.add_noise(x0, torch.zeros_like(n), torch.zeros(2)), math.sqrt(1 - b0) * x0, rtol=1e-15, atol=0
    )


def test_degenerate_schedules_are_rejected() -> None:
    with pytest.raises(ValueError, match="strictly decreasing signal-to-noise"):
        NoiseSchedule(ScheduleSettings(beta_schedule="linear", beta_start=0.5, beta_end=0.9, num_train_timesteps=5000))


@FAST
@given(params=schedule_settings(), data=st.data())
def test_fractional_timesteps_interpolate_between_neighbours(params: dict[str, Any], data: st.DataObject) -> None:
    s = NoiseSchedule(ScheduleSettings(**params))
    n = s.num_train_timesteps
    t = data.draw(st.floats(0, n - 1))
    a = float(s.alpha_bar_at(torch.tensor([t])))
    lo, hi = math.floor(t), min(math.floor(t) + 1, n - 1)
    a_lo, a_hi = float(s.alphas_cumprod[lo]), float(s.alphas_cumprod[hi])
    if t == lo:
        assert a == a_lo
    else:
        assert min(a_lo, a_hi) - 1e-15 <= a <= max(a_lo, a_hi) + 1e-15 or (a_hi == 0 and a <= a_lo)


def test_min_snr_weights() -> None:
    """min(SNR, gamma) expressed for each target, finite at zero SNR."""
    t = torch.tensor([0, 100, 500, 999])
    for pred in ("epsilon", "v_prediction", "sample"):
        zero = pred != "epsilon"
        s = build("ddpm", {"loss_weighting": "min-snr", "snr_gamma": 5.0, "prediction_type": pred,
                           "rescale_betas_zero_snr": zero})
        snr = s.snr(t)
        expected = {
            "epsilon": torch.clamp(snr, max=5.0) / snr,
            "v_prediction": torch.clamp(snr, max=5.0) / (snr + 1),
            "sample": torch.clamp(snr, max=5.0),
        }[pred]
        w = s.loss_weight(t)
        assert w.dtype == torch.float32 and bool(torch.isfinite(w).all())
        torch.testing.assert_close(w.double(), expected.nan_to_num(nan=1.0), rtol=1e-6, atol=1e-7)
    plain = build("ddpm", {})
    torch.testing.assert_close(plain.loss_weight(t), torch.ones(4))


# ----------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------


def _ray_oracle(x0: torch.Tensor, eps: torch.Tensor, prediction_type: str):  # noqa: ANN202
    """A model that knows x0 and the initial noise: it reads the noise level
    off x_t = a x0 + s eps (least squares) and returns the exact target. It
    needs no timestep, so it checks the samplers' algebra alone (with an exact
    model a deterministic sampler keeps x_t on that line)."""

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x_t.shape[0]
        basis = torch.stack([x0.reshape(b, -1), eps.reshape(b, -1)], dim=2)  # [B, D, 2]
        coef = torch.linalg.lstsq(basis, x_t.reshape(b, -1, 1)).solution[:, :, 0]
        a, s = (coef[:, k].view(-1, *([1] * (x_t.dim() - 1))) for k in (0, 1))
        norm = (a**2 + s**2).sqrt()
        a, s = a / norm, s / norm
        return {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0}[prediction_type]

    return model_fn


@pytest.mark.parametrize("name", DETERMINISTIC)
@SLOW
@given(data=st.data())
def test_oracle_model_recovers_x0(name: str, data: st.DataObject) -> None:
    """Deterministic samplers return x0 when the model is exact (float64).

    Two oracles: one that is exact for the state itself (checks the sampler's
    algebra; tolerance 1e-7), and modiff's contract oracle that trusts the
    timestep through add_noise, exact to 1e-9 wherever the timesteps the
    model sees are on the training grid. Stated exceptions of the second:
    zero terminal SNR on the sigma scale (sigma_max floored at 2^12, so one
    step leaves 2^-12 |noise|), and LMS with Karras sigmas, whose fractional
    timesteps come from log-linear interpolation (as in diffusers) while
    add_noise interpolates sigma linearly: LMS carries that mismatch through
    its multistep history (up to ~0.06 at 100 steps)."""
    opts = data.draw(sampler_options(name), label="options")
    steps = data.draw(st.sampled_from([1, 2, 3, 7, 20, 60]), label="steps")
    s = build(name, opts)
    g = torch.Generator().manual_seed(steps)
    x0 = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64).clamp(-1, 1)
    eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    # ray oracle: start exactly on the line, at the sampler's own first noise level
    level = s.plan(steps).levels[0]
    a0, s0 = (math.sqrt(level), math.sqrt(1 - level)) if s.spec.scale == "vp" else (
        1 / math.sqrt(1 + level**2), level / math.sqrt(1 + level**2))
    out = s.sample(_ray_oracle(x0, eps, s.prediction_type), a0 * x0 + s0 * eps, steps)
    # (the least-squares read-out of a ~ 1/sigma_max ~ 5e-5 for the cosine
    # schedule limits this oracle itself to ~1e-8)
    assert float((out - x0).abs().max()) <= 1e-7
    # timestep oracle: from pure noise, as in generation
    out = s.sample(oracle_model(s, x0), eps, steps)
    tol = 1e-9
    if s.spec.scale == "sigma" and opts["rescale_betas_zero_snr"] and steps == 1:
        tol = 2.5e-4 * float(eps.abs().max()) + 1e-9
    if name == "lms" and opts.get("use_karras_sigmas") and s.prediction_type != "sample":
        tol = 0.1
    assert float((out - x0).abs().max()) <= tol


@pytest.mark.parametrize("name", NAMES)
@SLOW
@given(data=st.data())
def test_finite_for_every_step_count(name: str, data: st.DataObject, model_fn: Any) -> None:
    """No NaN or Inf for any step count 1..T, across options (T = 100 here;
    the contract runs T = 1000 with default options)."""
    opts = data.draw(sampler_options(name), label="options")
    opts["num_train_timesteps"] = 100
    s = build(name, opts)
    steps = data.draw(st.one_of(st.sampled_from([1, 2, 99, 100]), st.integers(1, 100)), label="steps")
    noise = torch.randn(1, 2, 2, 2, generator=torch.Generator().manual_seed(steps))
    out = s.sample(model_fn, noise, steps, generator=modiff.generators([steps]))
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", list(STOCHASTIC))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_of_n_is_bit_identical_to_n_single_runs(name: str, dtype: torch.dtype, model_fn: Any) -> None:
    """Per-sample generators: image i of a batch is bit-identical to the same
    noise and seed generated alone, also with thresholding (a per-sample quantile)."""
    s = build(name, {**STOCHASTIC[name], "thresholding": True, "sample_max_value": 2.0})
    seeds = [101, 7, 55, 3]
    noise = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype)
    batch = s.sample(model_fn, noise, 12, generator=modiff.generators(seeds))
    for i, seed in enumerate(seeds):
        alone = s.sample(model_fn, noise[i : i + 1], 12, generator=modiff.generators([seed]))
        assert torch.equal(batch[i : i + 1], alone), f"sample {i}"


@pytest.mark.parametrize("name", list(STOCHASTIC))
def test_noise_is_drawn_in_float32(name: str, model_fn: Any) -> None:
    """The same seeds give the same noise in float32 and float64 runs, so the
    two agree to float32 accuracy."""
    s = build(name, STOCHASTIC[name])
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    lo = s.sample(model_fn, noise, 10, generator=modiff.generators([1, 2]))
    hi = s.sample(model_fn, noise.double(), 10, generator=modiff.generators([1, 2]))
    torch.testing.assert_close(lo.double(), hi, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "opts"),
    [("ddim", {}), ("ddim", {"timestep_spacing": "leading", "steps_offset": 1}),
     ("euler", {"timestep_spacing": "leading"}),
     ("heun", {}), ("euler", {"use_karras_sigmas": True, "timestep_spacing": "leading"}),
     ("heun", {"use_karras_sigmas": True})],
)
def test_resuming_from_a_state_continues_the_run(name: str, opts: dict[str, Any], model_fn: Any) -> None:
    """For single-step samplers, sampling from step k with the x_t the callback
    reported at step k reproduces the full run: start_step expects the VP-scale
    x_t at the noise level of step k, which add_noise gives at
    timesteps(steps)[k] (on Karras grids a timestep other than the model's)."""
    s = build(name, opts)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    states: list[torch.Tensor] = []
    full = s.sample(model_fn, noise, 12, callback=lambda i, t, x, x0: states.append(x))
    for k in (1, 5, 11):
        resumed = s.sample(model_fn, states[k], 12, start_step=k)
        torch.testing.assert_close(resumed, full, rtol=0, atol=1e-12)


def test_callback_reports_what_the_model_saw(model_fn: Any) -> None:
    for name in NAMES:
        s = build(name, {"timestep_spacing": "linspace"})
        calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        seen: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        out = s.sample(
            lambda x, t, calls=calls: calls.append((x, t)) or model_fn(x, t), noise, 6,
            generator=modiff.generators([1, 2]), callback=lambda *a, seen=seen: seen.append(a),
        )
        assert [i for i, *_ in seen] == list(range(6))
        ts = s.timesteps(6)
        first_calls = calls[::2] if name == "heun" else calls  # heun: one extra call per step but the last
        for (i, t, x, x0), (cx, ct) in zip(seen, first_calls, strict=False):
            assert torch.equal(t, ct) and float(t[0]) == pytest.approx(float(ts[i]))
            torch.testing.assert_close(x, cx, rtol=1e-12, atol=1e-12)
            assert x0.shape == x.shape
        if name in ("dpmpp-2m", "dpmpp-2m-sde", "unipc"):
            assert torch.equal(seen[-1][3], out)  # the step to sigma = 0 returns the last x0 estimate


def test_zero_terminal_snr_starts_from_pure_noise() -> None:
    """With zero terminal SNR the first timestep is pure noise: DDIM sees
    exactly the noise it is given, sigma samplers too (up to the 2^-24 floor)."""
    for name in NAMES:
        s = build(name, {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction"})
        assert float(s.alphas_cumprod[-1]) == 0.0
        assert float(s.timesteps(4)[0]) == s.num_train_timesteps - 1
        noise = torch.randn(1, 1, 2, 2, dtype=torch.float64)
        seen: list[torch.Tensor] = []
        s.sample(lambda x, t, seen=seen: seen.append(x) or torch.zeros_like(x), noise, 4)
        torch.testing.assert_close(seen[0], noise, rtol=1e-12, atol=1e-12)
