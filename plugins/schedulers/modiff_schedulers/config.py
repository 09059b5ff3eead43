"""Settings models: one noise schedule shared by every sampler, plus per-sampler options.

Every sampler's model extends :class:`ScheduleSettings`, whose fields are the
schedule keys (declared as ``schedule_keys`` for :mod:`modiff.sampler_swap`):
a model trained under ``ddpm`` is sampled with ``euler`` by handing those keys
to the ``euler`` factory, while the per-sampler options (``eta``, ``order``,
``use_karras_sigmas``, ...) start at the new sampler's defaults.
:func:`schedule_params` extracts exactly the shared keys.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

import modiff

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
PredictionType = Literal["epsilon", "v_prediction", "sample"]
Spacing = Literal["leading", "trailing", "linspace"]


class ScheduleSettings(modiff.ComponentSettings):
    """The noise schedule, the training objective and the x0 post-processing.

    These keys mean the same thing for every sampler; changing any of them
    (except the x0 post-processing) changes what a trained model expects.
    They are the run's, whichever sampler samples it: ``schedule_keys``
    declares them to the core (every field of this class; a subclass's own
    fields are its sampler's options).
    """

    schedule_keys: ClassVar[tuple[str, ...]] = ()  # set below, once the fields exist

    num_train_timesteps: int = Field(1000, ge=2, le=100_000, description="Discrete training timesteps T.")
    beta_schedule: BetaSchedule = Field(
        "scaled_linear", description="linear, scaled_linear (Stable Diffusion) or squaredcos_cap_v2 (cosine)."
    )
    beta_start: float = Field(0.00085, gt=0, lt=1, description="First beta (linear schedules only).")
    beta_end: float = Field(0.012, gt=0, lt=1, description="Last beta (linear schedules only).")
    prediction_type: PredictionType = Field("epsilon", description="What the denoiser predicts.")
    rescale_betas_zero_snr: bool = Field(
        False, description="Rescale betas so the last timestep has zero SNR (Lin et al. 2023); needs v or sample."
    )
    timestep_spacing: Spacing = Field(
        "trailing", description="How inference timesteps are spread over [0, T): leading, trailing or linspace."
    )
    steps_offset: int = Field(0, ge=0, description="Added to every timestep with leading spacing (SD 1.x uses 1).")
    clip_sample: bool = Field(False, description="Clamp the x0 estimate to [-clip_sample_range, clip_sample_range].")
    clip_sample_range: float = Field(1.0, gt=0)
    thresholding: bool = Field(False, description="Dynamic thresholding of the x0 estimate (Imagen); wins over clip.")
    dynamic_thresholding_ratio: float = Field(0.995, gt=0, le=1, description="Quantile of |x0| used as threshold.")
    sample_max_value: float = Field(1.0, gt=0, description="Upper bound of the dynamic threshold.")
    loss_weighting: Literal["none", "min-snr"] = Field(
        "none", description="Per-sample loss weights: none, or min-SNR-gamma (Hang et al. 2023)."
    )
    snr_gamma: float = Field(5.0, gt=0, description="gamma of min-SNR weighting.")
    timestep_shift: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Training timesteps t = T * s u / (1 + (s - 1) u), u uniform in [0, 1): 1 draws them uniformly; "
        "s > 1 draws noisier ones more often (where the layout, and so the prompt, is decided), s < 1 cleaner ones.",
    )

    @model_validator(mode="after")
    def _zero_snr_needs_x0_information(self) -> ScheduleSettings:
        if self.rescale_betas_zero_snr and self.prediction_type == "epsilon":
            raise ValueError(
                "rescale_betas_zero_snr = true with prediction_type = 'epsilon' cannot work: at zero SNR the "
                "noise prediction carries no information about the image. Use prediction_type = 'v_prediction' "
                "(or 'sample'), or set rescale_betas_zero_snr = false."
            )
        return self


class DDPMSettings(ScheduleSettings):
    """DDPM ancestral sampling."""

    variance_type: Literal["fixed_small", "fixed_large"] = Field(
        "fixed_small", description="Posterior variance (fixed_small) or beta_t (fixed_large)."
    )


class DDIMSettings(ScheduleSettings):
    """DDIM."""

    eta: float = Field(0.0, ge=0, le=1, description="0: deterministic DDIM; 1: as much noise as DDPM.")
    set_alpha_to_one: bool = Field(
        True, description="Final step goes to alpha_bar = 1 (clean); false uses alpha_bar[0] like SD 1.x configs."
    )


class SigmaSettings(ScheduleSettings):
    """Options of every sampler that runs on the sigma (variance-exploding) scale."""

    use_karras_sigmas: bool = Field(False, description="Karras et al. (2022) noise levels, rho = 7.")


class EulerSettings(SigmaSettings):
    """Euler (Karras et al. Algorithm 2 with optional churn)."""

    s_churn: float = Field(0.0, ge=0, description="Stochastic churn; 0 keeps Euler deterministic.")
    s_tmin: float = Field(0.0, ge=0, description="Churn only where sigma >= s_tmin.")
    s_tmax: float | None = Field(None, ge=0, description="Churn only where sigma <= s_tmax (none: no limit).")
    s_noise: float = Field(1.0, ge=0, description="Scale of the churn noise.")


class EulerAncestralSettings(SigmaSettings):
    """Euler ancestral."""

    eta: float = Field(1.0, ge=0, le=1, description="Fraction of the ancestral noise; 0 is plain Euler.")
    s_noise: float = Field(1.0, ge=0)


class HeunSettings(SigmaSettings):
    """Heun's second-order method (Karras et al. Algorithm 1)."""


class LMSSettings(SigmaSettings):
    """Linear multistep."""

    order: int = Field(4, ge=1, le=4, description="Number of past derivatives used.")


class DPMPP2MSettings(SigmaSettings):
    """DPM-Solver++(2M)."""

    solver_type: Literal["midpoint", "heun"] = Field("midpoint", description="Second-order correction formula.")


class DPMPP2MSDESettings(DPMPP2MSettings):
    """DPM-Solver++(2M) SDE."""

    eta: float = Field(1.0, ge=0, le=1, description="Amount of SDE noise; 0 gives the ODE solver.")
    s_noise: float = Field(1.0, ge=0)


class UniPCSettings(SigmaSettings):
    """UniPC (predictor-corrector), data prediction form."""

    order: int = Field(2, ge=2, le=4, description="Order of the predictor (and of the corrector).")
    solver_type: Literal["bh1", "bh2"] = Field("bh2", description="B(h) variant: bh1 (small steps) or bh2.")
    disable_corrector: list[int] = Field(
        default_factory=list, description="Step indices whose corrector is skipped (e.g. [0] with guidance)."
    )


class LCMSettings(ScheduleSettings):
    """Multistep consistency sampling (Luo et al. 2023), diffusers' ``LCMScheduler``.

    Its timesteps come from its own skipping schedule (``original_inference_steps``
    points ``T / original_inference_steps`` apart, of which ``steps`` are taken
    evenly by index), so ``timestep_spacing`` and ``steps_offset`` do not move them.
    """

    original_inference_steps: int = Field(
        50,
        ge=1,
        description="Points of the skipping schedule the model was distilled on (LCM: 50); capped at "
        "num_train_timesteps, and more steps than this use a schedule of `steps` points.",
    )
    timestep_scaling: float = Field(
        10.0, gt=0, description="Scale of t in the consistency boundary condition (c_skip, c_out); LCM: 10."
    )
    inference_shift: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Moves the steps along the skipping schedule by the time shift u -> s u / (1 + (s - 1) u) "
        "of u = t / T (rounded to its points): s > 1 spends them at noisier timesteps, s < 1 at cleaner ones; "
        "1 is diffusers' LCMScheduler grid.",
    )


ScheduleSettings.schedule_keys = tuple(ScheduleSettings.model_fields)
SCHEDULE_KEYS: tuple[str, ...] = ScheduleSettings.schedule_keys


def schedule_params(settings: modiff.ComponentSettings | dict[str, Any]) -> dict[str, Any]:
    """The noise-schedule keys of a sampler's settings (or a settings table).

    Everything a trained model depends on lives in these keys, so building any
    other sampler with them samples the same model (see ``with_sampler``).
    """
    data = settings.model_dump() if hasattr(settings, "model_dump") else dict(settings)
    return {k: v for k, v in data.items() if k in SCHEDULE_KEYS}
