"""Test-only bridge to diffusers: the equivalent diffusers scheduler for a
modiff sampler, and a loop that runs it the way diffusers pipelines do.

Kept out of the plugin: plugin code never imports diffusers.

How the comparison is made exact:

* Schedule: diffusers builds betas in float32. We construct its scheduler with
  the same settings and then overwrite its ``betas`` / ``alphas_cumprod``
  (and the tensors derived from them) with our float64 tables, so both sides
  step on the same numbers; ``test_schedule_matches_diffusers_float32`` checks
  separately that the two tables agree to float32 precision.
* Initial state: both start from the same state. Our sigma-scale samplers
  start at ``noise * sqrt(1 + sigma_0^2)``; diffusers' Euler-family scale the
  noise by ``init_noise_sigma`` (``sigma_0`` alone for linspace/trailing, a
  documented divergence), so they are handed our initial state directly.
* Precision: diffusers rounds its sigma grid to float32 in ``set_timesteps``
  and the state to float32 inside ``step`` (Euler, Euler ancestral,
  DPM-Solver). With the cosine schedule (sigma_max ~ 2e4) that alone moves x0
  by ~2e-3, hiding any real difference. So after ``set_timesteps`` every
  diffusers sigma is checked against our grid (relative 1e-5: float32
  rounding, including diffusers' float32 timesteps) and replaced by our
  float64 value, and the state is a :class:`KeepFloat64` tensor whose
  ``.to(torch.float32)`` is a no-op. ``test_parity_without_upcasting`` runs
  the unmodified diffusers for the usual schedules to show nothing else
  depends on this. Likewise diffusers' LCM computes its boundary condition
  (``c_skip``, ``c_out``) from the integer timestep tensor in float32, which
  with the cosine schedule (x0 estimates of ~1e2 at t = 999) moves the output
  by ~1.5e-5; ``upcast`` has it computed from a Python float instead.
* Noise: every random draw on both sides comes from the same per-sample
  generators. diffusers draws through ``randn_tensor`` in the dtype of the
  computation (float64 here); modiff draws float32 and casts. The test patches
  the scheduler modules' ``randn_tensor`` to draw like modiff, so both sides
  consume identical numbers in identical order, with no noise passed around.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

import modiff

DIFFUSERS_CLASS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "lms": "LMSDiscreteScheduler",
    "dpmpp-2m": "DPMSolverMultistepScheduler",
    "dpmpp-2m-sde": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lcm": "LCMScheduler",
}

#: diffusers schedulers whose state is on the sigma scale (they divide by
#: sqrt(sigma^2 + 1) in scale_model_input).
SIGMA_STATE = {"euler", "euler-ancestral", "heun", "lms"}

#: diffusers schedulers whose state is on the VP scale (no sigma table).
VP_STATE = {"ddpm", "ddim", "lcm"}

#: diffusers schedulers that round the state to float32 inside step().
FLOAT32_STATE = {"euler", "euler-ancestral", "dpmpp-2m", "dpmpp-2m-sde"}

#: Options each diffusers scheduler supports (others are not compared).
SUPPORTS_KARRAS = {"euler", "heun", "lms", "dpmpp-2m", "dpmpp-2m-sde", "unipc"}
SUPPORTS_ZERO_SNR = {"ddpm", "ddim", "lcm", "euler", "euler-ancestral", "dpmpp-2m", "dpmpp-2m-sde", "unipc"}
SUPPORTS_SAMPLE_PREDICTION = set(DIFFUSERS_CLASS) - {"euler-ancestral"}
SUPPORTS_CLIP = {"ddpm", "ddim", "heun", "lcm"}
SUPPORTS_THRESHOLDING = {"ddpm", "ddim", "lcm", "dpmpp-2m", "dpmpp-2m-sde", "unipc"}

_RANDN_MODULES = (
    "scheduling_ddpm",
    "scheduling_ddim",
    "scheduling_euler_discrete",
    "scheduling_euler_ancestral_discrete",
    "scheduling_dpmsolver_multistep",
    "scheduling_lcm",
)


def modiff_randn_tensor(
    shape: Any, generator: Any = None, device: Any = None, dtype: Any = None, **_: Any
) -> torch.Tensor:
    """diffusers' ``randn_tensor`` drawing like ``modiff.randn`` (float32, then cast)."""
    out = modiff.randn(tuple(shape), generator, device=device or "cpu", dtype=torch.float32)
    return out.to(dtype or torch.float32)


def patch_randn(monkeypatch: Any) -> None:
    import importlib

    for mod in _RANDN_MODULES:
        module = importlib.import_module(f"diffusers.schedulers.{mod}")
        monkeypatch.setattr(module, "randn_tensor", modiff_randn_tensor)


def _gauss_legendre_quad(f: Callable[[float], float], a: float, b: float, **_: Any) -> tuple[float, float]:
    """``scipy.integrate.quad`` stand-in: 3-point Gauss-Legendre, exact for
    polynomials of degree <= 5 (diffusers' LMS integrand has degree <= 3)."""
    half, mid = (b - a) / 2, (a + b) / 2
    r = math.sqrt(3 / 5)
    total = half * (5 / 9 * f(mid - half * r) + 8 / 9 * f(mid) + 5 / 9 * f(mid + half * r))
    return float(total), 0.0


def fast_lms_quadrature(monkeypatch: Any) -> None:
    """Replace the scipy quadrature in diffusers' LMS (~9 ms per step) by an
    exact rule for its polynomial integrand; ``test_lms_quadrature_swap_is_exact``
    checks that the coefficients do not change."""
    import importlib

    module = importlib.import_module("diffusers.schedulers.scheduling_lms_discrete")
    monkeypatch.setattr(module.integrate, "quad", _gauss_legendre_quad)


def make(name: str, ours: Any) -> Any:
    """The diffusers scheduler equivalent to ``ours`` (a DiffusionScheduler)."""
    import diffusers

    s = ours.settings
    kw: dict[str, Any] = dict(
        num_train_timesteps=s.num_train_timesteps,
        beta_start=s.beta_start,
        beta_end=s.beta_end,
        beta_schedule=s.beta_schedule,
        prediction_type=s.prediction_type,
        timestep_spacing=s.timestep_spacing,
        steps_offset=s.steps_offset,
    )
    if name in SUPPORTS_ZERO_SNR:
        kw["rescale_betas_zero_snr"] = s.rescale_betas_zero_snr
    elif s.rescale_betas_zero_snr:
        raise ValueError(f"diffusers' {name} has no zero-SNR option")
    if name in SUPPORTS_KARRAS:
        kw["use_karras_sigmas"] = s.use_karras_sigmas
    elif getattr(s, "use_karras_sigmas", False):
        raise ValueError(f"diffusers' {name} has no Karras option")
    if name in SUPPORTS_CLIP:
        kw.update(clip_sample=s.clip_sample, clip_sample_range=s.clip_sample_range)
    if name in SUPPORTS_THRESHOLDING:
        kw.update(
            thresholding=s.thresholding,
            dynamic_thresholding_ratio=s.dynamic_thresholding_ratio,
            sample_max_value=s.sample_max_value,
        )
    if name == "ddpm":
        kw["variance_type"] = s.variance_type
    if name == "ddim":
        kw["set_alpha_to_one"] = s.set_alpha_to_one
    if name in ("dpmpp-2m", "dpmpp-2m-sde"):
        kw.update(
            algorithm_type="dpmsolver++" if name == "dpmpp-2m" else "sde-dpmsolver++",
            solver_order=2,
            solver_type=s.solver_type,
            lower_order_final=True,
            final_sigmas_type="zero",
        )
    if name == "lcm":
        kw.update(original_inference_steps=s.original_inference_steps, timestep_scaling=s.timestep_scaling)
    if name == "unipc":
        kw.update(
            solver_order=s.order,
            solver_type=s.solver_type,
            disable_corrector=list(s.disable_corrector),
            predict_x0=True,
            lower_order_final=True,
        )
    sched = getattr(diffusers, DIFFUSERS_CLASS[name])(**kw)
    inject_schedule(sched, name, ours)
    return sched


def inject_schedule(sched: Any, name: str, ours: Any) -> None:
    """Replace diffusers' float32 schedule tables by ours (float64)."""
    sigma_scale = name not in VP_STATE
    abar = (ours.alphas_cumprod_sigma if sigma_scale else ours.alphas_cumprod).clone()
    sched.betas = ours.betas.clone()
    sched.alphas = 1.0 - sched.betas
    sched.alphas_cumprod = abar
    if name in ("ddim", "lcm"):
        one = torch.tensor(1.0, dtype=torch.float64)
        sched.final_alpha_cumprod = one if getattr(ours.settings, "set_alpha_to_one", True) else abar[0]
    if hasattr(sched, "lambda_t"):
        sched.alpha_t = abar.sqrt()
        sched.sigma_t = (1 - abar).sqrt()
        sched.lambda_t = sched.alpha_t.log() - sched.sigma_t.log()


def initial_state(name: str, ours: Any, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """The state diffusers' loop starts from, equal to ours (see the module docstring)."""
    if name in SIGMA_STATE:
        sigma0 = float(ours.sigmas_for(steps)[0])
        return noise * math.sqrt(1 + sigma0**2)
    return noise


Call = tuple[torch.Tensor, torch.Tensor]


class KeepFloat64(torch.Tensor):
    """A float64 tensor that ignores requests to become float32 (see the module docstring)."""

    def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        if (args and args[0] is torch.float32) or kwargs.get("dtype") is torch.float32:
            return self
        return super().to(*args, **kwargs)


def plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_subclass(torch.Tensor) if isinstance(x, KeepFloat64) else x


def upcast_boundary_condition(sched: Any) -> None:
    """diffusers' LCM boundary condition computed in float64 (see the module docstring)."""
    scalings = type(sched).get_scalings_for_boundary_condition_discrete

    def in_float64(timestep: Any) -> tuple[float, float]:
        return scalings(sched, float(timestep))

    sched.get_scalings_for_boundary_condition_discrete = in_float64


def upcast_sigmas(sched: Any, grid: torch.Tensor) -> None:
    """Replace diffusers' float32 sigmas by the float64 values of our grid,
    after checking that each equals one of ours to float32 precision."""
    theirs = sched.sigmas.to(torch.float64)
    ours = grid.to(torch.float64)
    idx = (theirs[:, None] - ours[None, :]).abs().argmin(dim=1)
    matched = ours[idx]
    rel = (theirs - matched).abs() / matched.abs().clamp(min=1e-30)
    bad = (rel > 1e-5) & ~((theirs == 0) & (matched == 0))
    if bool(bad.any()):
        raise AssertionError(f"diffusers' sigmas {theirs[bad].tolist()} are not in our grid {ours.tolist()}")
    sched.sigmas = matched.clone()


def run(
    name: str,
    sched: Any,
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    steps: int,
    *,
    generator: Any = None,
    step_kwargs: dict[str, Any] | None = None,
    ours: Any = None,
    upcast: bool = True,
    start_step: int = 0,
) -> tuple[torch.Tensor, list[Call]]:
    """A diffusers-pipeline denoising loop; returns the final sample and every
    model call ``(x_in, t)`` (VP scale, as the model saw it).

    ``upcast`` (needs ``ours``) keeps diffusers' sigmas and state in float64.
    The loop sets the begin index, as diffusers' img2img pipelines do, so a
    repeated timestep (Karras grids round timesteps) cannot misplace the step
    counter.
    """
    sched.set_timesteps(steps)
    if upcast and hasattr(sched, "sigmas") and name not in VP_STATE:
        upcast_sigmas(sched, ours.sigmas_for(steps))
    if upcast and name == "lcm":
        upcast_boundary_condition(sched)
    timesteps = sched.timesteps
    order = 2 if name == "heun" else 1
    begin = start_step * order
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(begin)
    kwargs = dict(step_kwargs or {})
    if "generator" in inspect.signature(sched.step).parameters:
        kwargs["generator"] = generator
    calls: list[Call] = []
    x = latents.as_subclass(KeepFloat64) if upcast and name in FLOAT32_STATE else latents
    for t in timesteps[begin:]:
        x_in = sched.scale_model_input(x, t)
        tt = torch.full((x.shape[0],), float(t), dtype=torch.float64)
        calls.append((plain(x_in), tt))
        out = model_fn(x_in, tt)
        x = sched.step(out, t, x, **kwargs).prev_sample
    return plain(x), calls


def run_ours(
    ours: Any,
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    steps: int,
    *,
    generator: Any = None,
    start_step: int = 0,
) -> tuple[torch.Tensor, list[Call]]:
    calls: list[Call] = []

    def recorded(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append((x, t))
        return model_fn(x, t)

    out = ours.sample(recorded, noise, steps, generator=generator, start_step=start_step)
    return out, calls


def step_kwargs(name: str, ours: Any) -> dict[str, Any]:
    s = ours.settings
    if name == "ddim":
        return {"eta": s.eta}
    if name == "lms":
        return {"order": s.order}
    return {}
