"""Trajectories against diffusers (a test-only dependency), float64.

Each case runs diffusers' equivalent scheduler in a pipeline-style loop and
our ``sample`` on the same model function and the same initial state, and
compares every model call (the VP-scale input and the timestep: the whole
trajectory) and the final sample. How the two are made comparable (float64
tables, one initial state, identical noise from per-sample generators) is
explained in ``_diffusers_reference``.

Tolerance: 1e-5 absolute on every model input and on the output. Timesteps
to 1e-4: diffusers keeps fractional timesteps in float32.

The matrix is every sampler x prediction type x beta schedule x spacing x
Karras (where diffusers has the option) at 1, 2 and 10 steps; 50 steps run on
the diagonal (beta schedule, spacing) pairs only, and for LMS (whose
diffusers step integrates with scipy, ~9 ms per step) on one pair, to stay in
the test-time budget. Deliberate divergences are tested at the end, each with
its reason.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import modiff

pytest.importorskip("diffusers")
import _diffusers_reference as ref  # noqa: E402

from modiff_schedulers.scheduler import DiffusionScheduler, build  # noqa: E402

pytestmark = pytest.mark.slow  # the parity matrix against diffusers

PREDICTIONS = ("epsilon", "v_prediction", "sample")
BETAS = ("linear", "scaled_linear", "squaredcos_cap_v2")
SPACINGS = ("leading", "trailing", "linspace")
DIAGONAL = {("linear", "leading"), ("scaled_linear", "trailing"), ("squaredcos_cap_v2", "linspace")}
SHAPE = (2, 3, 4, 4)
SEEDS = (11, 12)


def _noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def compare(
    name: str,
    ours: DiffusionScheduler,
    model_fn: Any,
    step_counts: list[int] | tuple[int, ...],
    *,
    upcast: bool = True,
    atol: float = 1e-5,
    noise: torch.Tensor | None = None,
    check_output: bool = True,
) -> None:
    """Run both sides for each step count and assert the trajectories agree at every model call."""
    noise = _noise() if noise is None else noise
    theirs = ref.make(name, ours)
    for steps in step_counts:
        latents = ref.initial_state(name, ours, noise, steps)
        d_out, d_calls = ref.run(
            name, theirs, model_fn, latents, steps,
            generator=modiff.generators(SEEDS), step_kwargs=ref.step_kwargs(name, ours), ours=ours, upcast=upcast,
        )
        o_out, o_calls = ref.run_ours(ours, model_fn, noise, steps, generator=modiff.generators(SEEDS))
        assert_same_run(f"{name} {steps} steps", o_out, o_calls, d_out, d_calls, atol, check_output)


def assert_same_run(
    where: str,
    o_out: torch.Tensor,
    o_calls: list[ref.Call],
    d_out: torch.Tensor,
    d_calls: list[ref.Call],
    atol: float = 1e-5,
    check_output: bool = True,
) -> None:
    """Same number of model calls, each with the same timestep (1e-4) and
    input (``atol``), and the same output (``atol``)."""
    assert len(o_calls) == len(d_calls), f"{where}: {len(o_calls)} model calls, diffusers made {len(d_calls)}"
    t_err = (torch.stack([c[1] for c in o_calls]) - torch.stack([c[1] for c in d_calls])).abs().amax(dim=1)
    x_err = (torch.stack([c[0] for c in o_calls]) - torch.stack([c[0] for c in d_calls])).abs().flatten(1).amax(dim=1)
    bad_t = torch.nonzero(~(t_err <= 1e-4))
    bad_x = torch.nonzero(~(x_err <= atol))
    assert not len(bad_t), f"{where}: timestep of call {int(bad_t[0])} differs by {float(t_err[bad_t[0]]):.3g}"
    assert not len(bad_x), f"{where}: input of call {int(bad_x[0])} differs by {float(x_err[bad_x[0]]):.3g} > {atol}"
    if check_output:
        err = float((o_out - d_out).abs().max())
        assert err <= atol, f"{where}: outputs differ by {err:.3g} > {atol}"


def _matrix() -> list[Any]:
    cases = []
    for name in ref.DIFFUSERS_CLASS:
        for pred in PREDICTIONS:
            if pred == "sample" and name not in ref.SUPPORTS_SAMPLE_PREDICTION:
                continue
            for beta in BETAS:
                for spacing in SPACINGS:
                    if name == "ddim" and spacing == "linspace":
                        continue  # diffusers' DDIM skips off its own grid here: test_ddim_linspace_divergence
                    for karras in (False, True) if name in ref.SUPPORTS_KARRAS else (False,):
                        tag = f"{name}-{pred}-{beta}-{spacing}" + ("-karras" if karras else "")
                        cases.append(pytest.param(name, pred, beta, spacing, karras, id=tag))
    return cases


def _step_counts(name: str, pred: str, beta: str, spacing: str) -> list[int]:
    counts = [1, 2, 10]
    if (beta, spacing) in DIAGONAL and (name != "lms" or (beta == "scaled_linear" and pred == "epsilon")):
        counts.append(50)
    return counts


@pytest.mark.parametrize(("name", "pred", "beta", "spacing", "karras"), _matrix())
def test_trajectory_matches_diffusers(
    diffusers_noise: Any, model_fn: Any, name: str, pred: str, beta: str, spacing: str, karras: bool
) -> None:
    opts: dict[str, Any] = {"prediction_type": pred, "beta_schedule": beta, "timestep_spacing": spacing}
    if karras:
        opts["use_karras_sigmas"] = True
    compare(name, build(name, opts), model_fn, _step_counts(name, pred, beta, spacing))


# ----------------------------------------------------------------------
# Options beyond the main matrix
# ----------------------------------------------------------------------

OPTION_CASES = [
    # DDIM's eta (stochastic: identical noise on both sides) and SD 1.x's final alpha
    *[("ddim", {"eta": eta, "prediction_type": p, "timestep_spacing": sp}) for eta in (0.5, 1.0)
      for p in PREDICTIONS for sp in ("leading", "trailing")],
    ("ddim", {"set_alpha_to_one": False, "timestep_spacing": "leading", "steps_offset": 1}),
    ("ddim", {"set_alpha_to_one": False, "eta": 0.3}),
    # DDPM's other variance (leading spacing: the last step is t = 0, see test_ddpm_fixed_large_divergence)
    *[("ddpm", {"variance_type": "fixed_large", "timestep_spacing": "leading", "prediction_type": p})
      for p in PREDICTIONS],
    # Stable Diffusion 1.x: leading spacing with steps_offset = 1, for every sampler
    *[(n, {"timestep_spacing": "leading", "steps_offset": 1}) for n in ref.DIFFUSERS_CLASS],
    # Zero terminal SNR (v and sample prediction; epsilon is rejected)
    *[(n, {"rescale_betas_zero_snr": True, "prediction_type": p, "timestep_spacing": sp})
      for n in sorted(ref.SUPPORTS_ZERO_SNR) for p in ("v_prediction", "sample") for sp in SPACINGS
      if (p in ("v_prediction",) or n in ref.SUPPORTS_SAMPLE_PREDICTION) and not (n == "ddim" and sp == "linspace")],
    *[(n, {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "use_karras_sigmas": True})
      for n in ("euler", "dpmpp-2m", "dpmpp-2m-sde", "unipc")],
    # x0 clipping and dynamic thresholding where diffusers has them
    *[(n, {"clip_sample": True, "clip_sample_range": 0.7, "prediction_type": p})
      for n in sorted(ref.SUPPORTS_CLIP) for p in PREDICTIONS],
    *[(n, {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5, "prediction_type": p})
      for n in sorted(ref.SUPPORTS_THRESHOLDING) for p in PREDICTIONS],
    # solver variants
    *[(n, {"solver_type": "heun", "prediction_type": p}) for n in ("dpmpp-2m", "dpmpp-2m-sde") for p in PREDICTIONS],
    ("unipc", {"order": 3}),
    ("unipc", {"order": 3, "use_karras_sigmas": True}),
    ("unipc", {"order": 4, "prediction_type": "v_prediction"}),
    ("unipc", {"disable_corrector": [0, 2]}),
    *[("lms", {"order": k}) for k in (1, 2, 3)],
]


@pytest.mark.parametrize(
    ("name", "opts"),
    [pytest.param(n, o, id=f"{n}-" + "-".join(f"{k}={v}" for k, v in o.items())) for n, o in OPTION_CASES],
)
def test_options_match_diffusers(diffusers_noise: Any, model_fn: Any, name: str, opts: dict[str, Any]) -> None:
    compare(name, build(name, opts), model_fn, (1, 2, 10))


@pytest.mark.parametrize("name", list(ref.DIFFUSERS_CLASS))
def test_parity_without_upcasting(diffusers_noise: Any, model_fn: Any, name: str) -> None:
    """Unmodified diffusers (float32 sigmas and, for some, float32 state) on
    Stable Diffusion's schedule agrees to 1e-5 too: the float64 upcast in the
    matrix only removes float32 rounding, which matters for the cosine schedule."""
    ours = build(name, {"timestep_spacing": "trailing"})
    compare(name, ours, model_fn, [25], upcast=False)


@pytest.mark.parametrize(
    ("name", "spacing", "start", "karras"),
    [("ddim", "leading", 4, False), ("ddpm", "trailing", 3, False), ("euler", "leading", 5, False),
     ("heun", "trailing", 2, False), ("dpmpp-2m", "trailing", 3, False), ("unipc", "leading", 6, False),
     ("euler-ancestral", "trailing", 1, False),
     # Karras noise levels: the multistep solvers give the model rounded timesteps, but
     # the image must be noised to the Karras level itself, as diffusers' add_noise does.
     ("dpmpp-2m", "trailing", 3, True), ("dpmpp-2m-sde", "leading", 2, True), ("unipc", "trailing", 4, True),
     ("euler", "leading", 5, True), ("heun", "trailing", 2, True)],
)
def test_img2img_matches_diffusers(
    diffusers_noise: Any, model_fn: Any, name: str, spacing: str, start: int, karras: bool
) -> None:
    """``start_step`` against a diffusers img2img loop (begin index, add_noise at
    the first timestep kept). Our input is add_noise on the VP scale at
    ``timesteps(steps)[start]``: the timestep of that step's noise level, so it
    is the noise level diffusers' add_noise uses (with Karras sigmas a
    fractional timestep, while the model is given diffusers' rounded one).

    LMS is left out on purpose: diffusers' LMS takes its order from the
    absolute step index, so after a begin index it weights the one derivative
    it has with higher-order coefficients meant for steps it never took; ours
    warms up from order 1 again, like the other multistep samplers."""
    steps = 10
    ours = build(name, {"timestep_spacing": spacing, **({"use_karras_sigmas": True} if karras else {})})
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    eps = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    t = ours.timesteps(steps)[start]
    assert karras or float(t) == int(t)
    x_start = ours.add_noise(x0, eps, t.expand(SHAPE[0]))

    theirs = ref.make(name, ours)
    theirs.set_timesteps(steps)
    order = 2 if name == "heun" else 1
    if hasattr(theirs, "set_begin_index"):
        theirs.set_begin_index(start * order)
    t_theirs = theirs.timesteps[start * order : start * order + 1]
    latents = theirs.add_noise(x0, eps, t_theirs)
    d_out, d_calls = ref.run(
        name, theirs, model_fn, latents, steps, generator=modiff.generators(SEEDS),
        step_kwargs=ref.step_kwargs(name, ours), ours=ours, start_step=start,
    )
    o_out, o_calls = ref.run_ours(ours, model_fn, x_start, steps, generator=modiff.generators(SEEDS), start_step=start)
    assert_same_run(f"{name} from step {start}", o_out, o_calls, d_out, d_calls)


# ----------------------------------------------------------------------
# Grids and schedules over many step counts (cheap: no sampling)
# ----------------------------------------------------------------------


def test_schedule_matches_diffusers_float32() -> None:
    """Our float64 alpha_bar equals diffusers' float32 one to float32 accuracy."""
    import diffusers

    for beta in BETAS:
        for zero in (False, True):
            opts = {"beta_schedule": beta, "rescale_betas_zero_snr": zero, "prediction_type": "v_prediction"}
            ours = build("ddim", opts)
            theirs = diffusers.DDIMScheduler(
                beta_schedule=beta, beta_start=0.00085, beta_end=0.012, rescale_betas_zero_snr=zero
            ).alphas_cumprod.double()
            torch.testing.assert_close(ours.alphas_cumprod, theirs, rtol=5e-5, atol=1e-6)


GRID_STEPS = sorted({*range(1, 21), *range(21, 1001, 97), 448, 485, 999, 1000})
GRID_STEPS_KARRAS = [1, 2, 3, 4, 5, 8, 13, 50, 448, 485, 999, 1000]  # diffusers' Karras grids are slow to build


@pytest.mark.parametrize(
    ("name", "karras"),
    [("ddim", False), ("euler", False), ("euler", True), ("heun", True), ("lms", False),
     ("dpmpp-2m", False), ("dpmpp-2m", True), ("unipc", True)],
)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_grids_match_diffusers(name: str, karras: bool, spacing: str) -> None:
    """Timesteps and sigmas for many step counts, 1 to T, against set_timesteps
    (ddpm shares ddim's grid; unipc without Karras shares dpmpp-2m's).

    Where diffusers' grid is broken we raise or deviate instead, checked here:
    leading spacing whose offset pushes a timestep past T - 1 (diffusers
    indexes past its tables; we raise), trailing spacing whose float arange
    comes out one step too long (diffusers appends timestep -1; we give
    exactly ``steps``), and multistep solvers with steps = T
    (``test_multistep_all_timesteps_divergence``)."""
    opts: dict[str, Any] = {"timestep_spacing": spacing, "steps_offset": 1 if spacing == "leading" else 0}
    if karras:
        opts["use_karras_sigmas"] = True
    ours = build(name, opts)
    theirs = ref.make(name, ours)
    n = ours.num_train_timesteps
    for steps in GRID_STEPS_KARRAS if karras else GRID_STEPS:
        if name in ("dpmpp-2m", "unipc") and spacing != "trailing" and steps == n:
            continue
        theirs.set_timesteps(steps)
        ts = theirs.timesteps.double()
        sig = theirs.sigmas.double() if hasattr(theirs, "sigmas") and name != "ddim" else None
        if name == "heun":
            ts, sig = ts[::2], torch.cat([sig[:1], sig[1::2]])
        try:
            mine = ours.model_timesteps(steps)
        except ValueError:
            assert float(ts.max()) > n - 1, f"{steps} steps: we raised but diffusers' grid is valid"
            continue
        if spacing == "trailing" and len(np.arange(n, 0, -n / steps)) != steps:
            assert len(mine) == steps  # diffusers' grid has a step too many, ending at t = -1
            continue
        torch.testing.assert_close(mine, ts, rtol=0, atol=1e-4, msg=f"{steps} steps")
        if sig is not None:
            torch.testing.assert_close(ours.sigmas_for(steps), sig, rtol=1e-5, atol=0, msg=f"{steps} steps")
        # timesteps(): where add_noise puts each step's noise level (img2img's starting points)
        noise_ts = ours.timesteps(steps)
        if not karras:
            assert torch.equal(noise_ts, mine)
        elif name != "ddim":
            levels = torch.tensor([ours.sigma_at(float(t)) for t in noise_ts], dtype=torch.float64)
            torch.testing.assert_close(levels, ours.sigmas_for(steps)[:-1], rtol=1e-12, atol=0)


def test_leading_offset_beyond_the_last_timestep_is_an_error() -> None:
    ours = build("ddim", {"timestep_spacing": "leading", "steps_offset": 1})
    with pytest.raises(ValueError, match="steps_offset = 1"):
        ours.timesteps(1000)


# ----------------------------------------------------------------------
# Deliberate divergences from diffusers, each with its reason
# ----------------------------------------------------------------------


def test_ddim_linspace_divergence(diffusers_noise: Any, model_fn: Any) -> None:
    """diffusers' DDIM steps from t to ``t - T // steps`` whatever the spacing,
    so with linspace (and trailing when T is not a multiple of steps) it lands
    on timesteps it never visits and evaluates the model at a noise level its
    state is not at. Our DDIM steps to the next visited timestep.

    Evidence: (1) diffusers' own jump targets are off its grid; (2) our DDIM
    with eta = 1 is the DDPM posterior step, so on the linspace grid it must
    equal diffusers' DDPM (which does step to the next visited timestep)."""
    import diffusers

    d = diffusers.DDIMScheduler(timestep_spacing="linspace")
    d.set_timesteps(10)
    grid = d.timesteps.tolist()
    targets = [t - 1000 // 10 for t in grid[:-1]]
    assert any(t not in grid for t in targets)

    ours = build("ddim", {"timestep_spacing": "linspace", "eta": 1.0})
    ddpm = build("ddpm", {"timestep_spacing": "linspace"})
    noise = _noise(3)
    theirs = ref.make("ddpm", ddpm)
    d_out, _ = ref.run("ddpm", theirs, model_fn, noise, 10, generator=modiff.generators(SEEDS), ours=ddpm)
    o_out = ours.sample(model_fn, noise, 10, generator=modiff.generators(SEEDS))
    torch.testing.assert_close(o_out, d_out, rtol=0, atol=1e-5)


def test_init_noise_sigma_divergence() -> None:
    """diffusers' Euler-family schedulers scale the initial noise by sigma_max
    for linspace/trailing spacing but by sqrt(1 + sigma_max^2) for leading. The
    noise passed to our ``sample`` is the VP sample x_T, so it is always scaled
    by sqrt(1 + sigma_max^2); the two differ by a factor below 1 + 1/(2 sigma_max^2)."""
    import diffusers

    ours = build("euler", {"timestep_spacing": "trailing"})
    d = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="trailing"
    )
    d.set_timesteps(20)
    sigma_max = float(ours.sigmas_for(20)[0])
    assert float(d.init_noise_sigma) == pytest.approx(sigma_max, rel=1e-6)
    seen: list[torch.Tensor] = []
    noise = _noise(4)
    ours.sample(lambda x, t: seen.append(x) or torch.zeros_like(x), noise, 20)
    torch.testing.assert_close(seen[0], noise, rtol=1e-12, atol=1e-12)  # the model sees the noise itself
    ratio = math.sqrt(1 + sigma_max**2) / sigma_max
    assert 1 < ratio < 1 + 1 / (2 * sigma_max**2) + 1e-12


def test_euler_churn_divergence(model_fn: Any) -> None:
    """With ``s_churn > 0`` diffusers evaluates the model on the state before
    adding the churn noise but uses the result at the raised noise level;
    Karras et al. (Alg. 2) and k-diffusion add the noise first and evaluate
    the model there, as we do. One step to sigma = 0 returns the model's x0
    estimate at the churned state."""
    ours = build("euler", {"s_churn": 1.0, "timestep_spacing": "trailing"})
    noise = _noise(5)
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    out = ours.sample(lambda x, t: calls.append((x, t)) or model_fn(x, t), noise, 1, generator=modiff.generators(SEEDS))
    sigma = float(ours.sigmas_for(1)[0])
    gamma = min(1.0 / 1, 2**0.5 - 1)
    sigma_hat = sigma * (1 + gamma)
    z = modiff.randn(SHAPE, modiff.generators(SEEDS), dtype=torch.float32).double()
    x_hat = noise * math.sqrt(1 + sigma**2) + z * math.sqrt(sigma_hat**2 - sigma**2)
    x_in, t = calls[0]
    torch.testing.assert_close(x_in, x_hat / math.sqrt(1 + sigma_hat**2))
    assert float(t[0]) == pytest.approx(ours.sigma_to_t(sigma_hat))
    torch.testing.assert_close(out, x_hat - sigma_hat * model_fn(x_in, t))


def test_ddpm_fixed_large_divergence(diffusers_noise: Any, model_fn: Any) -> None:
    """diffusers' DDPM adds noise after every step with t > 0, including the
    last one when the grid does not end at t = 0 (trailing spacing); with
    ``fixed_large`` that noise has the full variance beta, so its "clean"
    sample is noisy. We add no noise after the last step: the outputs differ
    by exactly diffusers' final draw times sqrt(beta_last)."""
    steps = 5
    ours = build("ddpm", {"variance_type": "fixed_large", "timestep_spacing": "trailing"})
    theirs = ref.make("ddpm", ours)
    noise = _noise(6)
    d_out, _ = ref.run("ddpm", theirs, model_fn, noise, steps, generator=modiff.generators(SEEDS), ours=ours)
    o_out = ours.sample(model_fn, noise, steps, generator=modiff.generators(SEEDS))
    gens = modiff.generators(SEEDS)
    draws = [modiff.randn(SHAPE, gens, dtype=torch.float32).double() for _ in range(steps)]
    beta_last = 1 - float(ours.alphas_cumprod[int(ours.timesteps(steps)[-1])])
    torch.testing.assert_close(o_out + math.sqrt(beta_last) * draws[-1], d_out, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["dpmpp-2m", "unipc"])
@pytest.mark.parametrize("spacing", ["linspace", "leading"])
def test_multistep_all_timesteps_divergence(name: str, spacing: str, model_fn: Any) -> None:
    """With steps = T, diffusers' multistep solvers spread T + 1 points over
    T timesteps (linspace) or use a step ratio of 0 (leading): timesteps
    repeat, the log-SNR step h is 0 and the result is NaN. We visit every
    training timestep once (the trailing grid) and stay finite."""
    import diffusers

    ours = build(name, {"timestep_spacing": spacing, "num_train_timesteps": 50})
    cls = getattr(diffusers, ref.DIFFUSERS_CLASS[name])
    d = cls(num_train_timesteps=50, timestep_spacing=spacing)
    d.set_timesteps(50)
    assert len(set(d.timesteps.tolist())) < 50
    assert ours.timesteps(50).tolist() == list(map(float, range(49, -1, -1)))
    out = ours.sample(model_fn, _noise(7), 50)
    assert bool(torch.isfinite(out).all())


def test_unipc_bh1_divergence(diffusers_noise: Any, model_fn: Any) -> None:
    """UniPC with B(h) = h (bh1): at the last step h is infinite and diffusers
    multiplies an empty correction (0) by B(h) = -inf, returning NaN. The step
    to sigma = 0 is first order and returns the x0 estimate, which we do
    directly; every model call before it agrees with diffusers."""
    ours = build("unipc", {"order": 3, "solver_type": "bh1", "use_karras_sigmas": True})
    compare("unipc", ours, model_fn, (1, 2, 10), check_output=False)
    theirs = ref.make("unipc", ours)
    d_out, _ = ref.run("unipc", theirs, model_fn, _noise(), 10, ours=ours)
    assert bool(torch.isnan(d_out).all())
    last: list[torch.Tensor] = []
    out = ours.sample(model_fn, _noise(), 10, callback=lambda i, t, x, x0: last.append(x0))
    torch.testing.assert_close(out, last[-1], rtol=0, atol=0)


def test_lms_quadrature_swap_is_exact() -> None:
    """The exact rule the other tests give diffusers' LMS (for speed) yields
    scipy's coefficients, and ours equal both."""
    import diffusers
    import scipy.integrate

    from modiff_schedulers.k_samplers import lms_coefficient

    d = diffusers.LMSDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    d.set_timesteps(12)
    sig = d.sigmas.double().tolist()
    for i in (0, 1, 2, 5, 11):
        order = min(i + 1, 4)
        for j in range(order):
            scipy_value = d.get_lms_coefficient(order, i, j)
            original = scipy.integrate.quad
            try:
                scipy.integrate.quad = ref._gauss_legendre_quad
                swapped = d.get_lms_coefficient(order, i, j)
            finally:
                scipy.integrate.quad = original
            # diffusers evaluates the integrand in float32 (its sigmas), so
            # both rules agree to float32 rounding
            assert swapped == pytest.approx(scipy_value, rel=1e-6, abs=1e-9)
            assert lms_coefficient(sig, i, order, j) == pytest.approx(scipy_value, rel=1e-6, abs=1e-9)


def test_euler_ancestral_sample_prediction_divergence() -> None:
    """diffusers' Euler ancestral raises for prediction_type = 'sample'; ours
    supports it (the x0 estimate is the prediction itself)."""
    import diffusers

    d = diffusers.EulerAncestralDiscreteScheduler(prediction_type="sample")
    d.set_timesteps(2)
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(NotImplementedError):
        d.step(x, d.timesteps[0], x)
    ours = build("euler-ancestral", {"prediction_type": "sample"})
    x0 = torch.full((1, 1, 2, 2), 0.25, dtype=torch.float64)
    out = ours.sample(lambda x, t: x0.expand_as(x), torch.randn(1, 1, 2, 2, dtype=torch.float64), 4)
    torch.testing.assert_close(out, x0)


def test_karras_grid_is_shared_by_the_euler_family() -> None:
    """diffusers' Euler ancestral has no Karras option; ours uses the same
    Karras grid as Euler, Heun and LMS (whose grids are parity-tested above)."""
    for steps in (1, 7, 30):
        grid = build("euler", {"use_karras_sigmas": True}).sigmas_for(steps)
        for name in ("euler-ancestral", "heun", "lms"):
            torch.testing.assert_close(build(name, {"use_karras_sigmas": True}).sigmas_for(steps), grid, rtol=0, atol=0)
