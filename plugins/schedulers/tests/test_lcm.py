"""The ``lcm`` sampler against diffusers' ``LCMScheduler`` (issue 40).

Timesteps for many schedules and step counts, and whole trajectories (every
model call's input and timestep, and the output, within 1e-5) at 1, 2, 4 and
8 steps, with two model functions: the shared smooth stand-in and a fixed
random one. LCM re-noises between steps; both sides draw that noise from the
same per-sample generators in the same order (diffusers after each step but
the last, through ``randn_tensor``: see ``_diffusers_reference``), and one
test runs unpatched diffusers in float32 to show the order is diffusers' own.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import modiff

pytest.importorskip("diffusers")
import _diffusers_reference as ref  # noqa: E402
from test_parity_diffusers import BETAS, PREDICTIONS, SEEDS, SHAPE, assert_same_run, compare  # noqa: E402

from modiff_schedulers.scheduler import build  # noqa: E402

STEPS = (1, 2, 4, 8)


def random_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed random network: random channel mixing, a random per-timestep
    bias and a saturation, so a wrong input, timestep or scale shows."""
    g = torch.Generator().manual_seed(1234)
    c = x.shape[1]
    mix = torch.randn(c, c, generator=g, dtype=torch.float64).to(x.dtype) / c**0.5
    bias = torch.randn(c, generator=g, dtype=torch.float64).to(x.dtype)
    tt = t.view(-1, 1, *([1] * (x.dim() - 2))).to(x.dtype)
    mixed = torch.einsum("oc,bc...->bo...", mix, x)
    return 0.7 * torch.tanh(mixed) + 0.3 * x + 0.1 * bias.view(1, c, *([1] * (x.dim() - 2))) * torch.sin(tt / 97.0)


MODELS = {"smooth": None, "random": random_model}


def _diffusers_timesteps(steps: int, **config: Any) -> list[float]:
    import diffusers

    sched = diffusers.LCMScheduler(**config)
    sched.set_timesteps(steps)
    return [float(t) for t in sched.timesteps]


@pytest.mark.parametrize(("train", "original"), [(1000, 50), (1000, 4), (1000, 1000), (1000, 300), (500, 64), (7, 7)])
def test_timesteps_match_diffusers(train: int, original: int) -> None:
    ours = build("lcm", {"num_train_timesteps": train, "original_inference_steps": original})
    for steps in sorted({s for s in (1, 2, 3, 4, 5, 8, 13, original - 1, original) if 1 <= s <= original}):
        theirs = _diffusers_timesteps(steps, num_train_timesteps=train, original_inference_steps=original)
        assert ours.model_timesteps(steps).tolist() == theirs, f"T={train}, original={original}, {steps} steps"
        assert ours.timesteps(steps).tolist() == theirs


def test_spacing_and_offset_do_not_move_lcm_timesteps() -> None:
    """diffusers' LCM ignores timestep_spacing and steps_offset; so do we."""
    base = build("lcm").timesteps(4).tolist()
    assert base == [999.0, 759.0, 499.0, 259.0]
    for opts in ({"timestep_spacing": "leading", "steps_offset": 1}, {"timestep_spacing": "linspace"}):
        assert build("lcm", opts).timesteps(4).tolist() == base


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_trajectory_matches_diffusers(diffusers_noise: Any, model_fn: Any, pred: str, beta: str, model: str) -> None:
    ours = build("lcm", {"prediction_type": pred, "beta_schedule": beta})
    compare("lcm", ours, MODELS[model] or model_fn, STEPS)


@pytest.mark.parametrize(
    "opts",
    [
        {"original_inference_steps": 25},
        {"original_inference_steps": 8, "num_train_timesteps": 200},
        {"timestep_scaling": 2.5},
        {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
        {"clip_sample": True, "clip_sample_range": 0.7},
        {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_options_match_diffusers(diffusers_noise: Any, opts: dict[str, Any]) -> None:
    compare("lcm", build("lcm", opts), random_model, STEPS)


def test_unpatched_diffusers_draws_the_same_noise_in_float32() -> None:
    """No patching: diffusers' own ``randn_tensor`` in float32 from the same
    per-sample generators consumes the same numbers in the same order."""
    ours = build("lcm")
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    theirs = ref.make("lcm", ours)
    for steps in STEPS:
        d_out, d_calls = ref.run("lcm", theirs, random_model, noise, steps, generator=modiff.generators(SEEDS))
        o_out, o_calls = ref.run_ours(ours, random_model, noise, steps, generator=modiff.generators(SEEDS))
        assert_same_run(f"lcm float32 {steps} steps", o_out, o_calls, d_out, d_calls)


def test_img2img_matches_diffusers(diffusers_noise: Any) -> None:
    """``start_step`` against diffusers' loop with a begin index (what its
    img2img pipelines do with a custom start)."""
    steps, start = 8, 3
    ours = build("lcm")
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    eps = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    x_start = ours.add_noise(x0, eps, ours.timesteps(steps)[start].expand(SHAPE[0]))
    theirs = ref.make("lcm", ours)
    d_out, d_calls = ref.run(
        "lcm", theirs, random_model, x_start, steps, generator=modiff.generators(SEEDS), ours=ours, start_step=start
    )
    o_out, o_calls = ref.run_ours(
        ours, random_model, x_start, steps, generator=modiff.generators(SEEDS), start_step=start
    )
    assert_same_run("lcm from step 3", o_out, o_calls, d_out, d_calls)


def test_more_steps_than_the_skipping_schedule_divergence() -> None:
    """diffusers refuses more steps than ``original_inference_steps``; the
    Scheduler protocol asks for every count up to T, so we take a skipping
    schedule of ``steps`` points (all training timesteps at ``steps = T``)."""
    import diffusers

    with pytest.raises(ValueError, match="smaller than `num_inference_steps`: 60"):
        diffusers.LCMScheduler().set_timesteps(60)
    ours = build("lcm", {"num_train_timesteps": 120, "original_inference_steps": 50})
    assert ours.timesteps(60).tolist() == [float(t) for t in range(119, -1, -2)]
    assert ours.timesteps(120).tolist() == [float(t) for t in range(119, -1, -1)]
    assert build("lcm", {"num_train_timesteps": 20}).timesteps(20).tolist() == [float(t) for t in range(19, -1, -1)]


def test_the_last_step_returns_the_consistency_output_and_draws_no_noise() -> None:
    """One step is the consistency function itself; no noise is drawn after the last step."""
    ours = build("lcm")
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    before = g.get_state().clone()
    out = ours.sample(random_model, noise, 1, generator=g)
    assert torch.equal(g.get_state(), before)
    t = 999.0
    a = float(ours.alphas_cumprod[999])
    x0 = (noise - (1 - a) ** 0.5 * random_model(noise, torch.full((SHAPE[0],), t, dtype=torch.float64))) / a**0.5
    scaled = t * 10.0
    c_skip, c_out = 0.25 / (scaled**2 + 0.25), scaled / (scaled**2 + 0.25) ** 0.5
    torch.testing.assert_close(out, c_out * x0 + c_skip * noise, rtol=0, atol=1e-12)


def test_inference_shift_moves_the_steps_along_the_skipping_schedule() -> None:
    """``inference_shift`` (not in diffusers; default 1 is its grid, tested above) keeps every
    step on the skipping schedule the model was distilled on, distinct and decreasing from the
    noisiest point, and moves them noisier (> 1) or cleaner (< 1) than diffusers' grid."""
    assert build("lcm", {"inference_shift": 3.0}).timesteps(4).tolist() == [999.0, 899.0, 759.0, 519.0]
    assert build("lcm", {"inference_shift": 0.5}).timesteps(4).tolist() == [999.0, 619.0, 339.0, 139.0]
    assert build("lcm", {"inference_shift": 1.0}).timesteps(4).tolist() == [999.0, 759.0, 499.0, 259.0]
    schedule = {float(j * 20 - 1) for j in range(1, 51)}
    for shift in (0.05, 0.5, 0.8, 1.5, 3.0, 20.0):
        for steps in range(1, 51):
            base = build("lcm").timesteps(steps).tolist()
            ts = build("lcm", {"inference_shift": shift}).timesteps(steps).tolist()
            assert len(ts) == steps and ts[0] == 999.0 and set(ts) <= schedule, (shift, steps, ts)
            assert all(a > b for a, b in zip(ts, ts[1:])), (shift, steps, ts)
            if steps <= 8:  # away from the crowded ends the shift only moves points one way
                assert all((t >= b) if shift > 1 else (t <= b) for t, b in zip(ts, base)), (shift, steps, ts)


def test_inference_shift_samples_like_diffusers_given_the_same_timesteps(diffusers_noise: Any) -> None:
    """With a shift, each step is still diffusers' LCM step: diffusers' loop handed our shifted
    timesteps (``set_timesteps(timesteps=...)``) makes the same calls and the same output (1e-5)."""
    ours = build("lcm", {"inference_shift": 2.0, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True})
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for steps in (2, 4, 8):
        theirs = ref.make("lcm", ours)
        grid = [int(t) for t in ours.timesteps(steps).tolist()]
        assert grid != [int(t) for t in build("lcm").timesteps(steps).tolist()]  # the shift moved something
        set_grid = theirs.set_timesteps
        theirs.set_timesteps = lambda n, grid=grid, set_grid=set_grid: set_grid(timesteps=grid)
        d_out, d_calls = ref.run(
            "lcm", theirs, random_model, noise, steps, generator=modiff.generators(SEEDS), ours=ours
        )
        o_out, o_calls = ref.run_ours(ours, random_model, noise, steps, generator=modiff.generators(SEEDS))
        assert_same_run(f"lcm shift 2, {steps} steps", o_out, o_calls, d_out, d_calls)
