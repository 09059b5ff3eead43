"""Every registered sampler passes modiff's Scheduler contract.

One class per sampler with its default settings, plus variants that switch on
the options that change the code path (noise, Karras grids, zero terminal
SNR, x0 clipping and thresholding, other orders).
"""

from __future__ import annotations

from typing import Any, ClassVar

from modiff.testing.contracts import SchedulerContract

# Zero terminal SNR on the sigma scale: the first noise level is floored at
# sigma_max = 2^12 (alpha_bar = 2^-24, as diffusers does), while add_noise
# (and so the contract's oracle) puts no signal at all at the last timestep.
# A one-step run then keeps a residue of the noise of 2^-12 * |noise| in x0,
# about 1e-3 for 4-sigma noise.
ZERO_SNR_ORACLE_ATOL = 2e-3


class TestDDPM(SchedulerContract):
    plugin = "ddpm"
    stochastic = True


class TestDDIM(SchedulerContract):
    plugin = "ddim"


class TestDDIMStochastic(SchedulerContract):
    plugin = "ddim"
    settings: ClassVar[dict[str, Any]] = {"eta": 0.5, "prediction_type": "v_prediction", "timestep_spacing": "leading"}
    stochastic = True


class TestEuler(SchedulerContract):
    plugin = "euler"


class TestEulerChurnKarras(SchedulerContract):
    plugin = "euler"
    settings: ClassVar[dict[str, Any]] = {"s_churn": 1.0, "use_karras_sigmas": True, "timestep_spacing": "linspace"}
    stochastic = True


class TestEulerAncestral(SchedulerContract):
    plugin = "euler-ancestral"
    stochastic = True


class TestHeun(SchedulerContract):
    plugin = "heun"


class TestHeunZeroSNRClipped(SchedulerContract):
    plugin = "heun"
    settings: ClassVar[dict[str, Any]] = {
        "rescale_betas_zero_snr": True,
        "prediction_type": "v_prediction",
        "clip_sample": True,
        "clip_sample_range": 2.0,
        "num_train_timesteps": 200,
    }
    oracle_atol = ZERO_SNR_ORACLE_ATOL


class TestLMS(SchedulerContract):
    plugin = "lms"


class TestLMSOrder2Cosine(SchedulerContract):
    plugin = "lms"
    settings: ClassVar[dict[str, Any]] = {"order": 2, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample"}


class TestDPMPP2M(SchedulerContract):
    plugin = "dpmpp-2m"


class TestDPMPP2MKarrasThresholded(SchedulerContract):
    plugin = "dpmpp-2m"
    settings: ClassVar[dict[str, Any]] = {
        "use_karras_sigmas": True,
        "solver_type": "heun",
        "thresholding": True,
        "sample_max_value": 3.0,
        "num_train_timesteps": 200,
    }


class TestDPMPP2MSDE(SchedulerContract):
    plugin = "dpmpp-2m-sde"
    stochastic = True


class TestUniPC(SchedulerContract):
    plugin = "unipc"


class TestUniPCOrder3ZeroSNR(SchedulerContract):
    plugin = "unipc"
    settings: ClassVar[dict[str, Any]] = {
        "order": 3,
        "solver_type": "bh1",
        "rescale_betas_zero_snr": True,
        "prediction_type": "v_prediction",
        "timestep_spacing": "linspace",
        "num_train_timesteps": 200,
    }
    oracle_atol = ZERO_SNR_ORACLE_ATOL


class TestLCM(SchedulerContract):
    plugin = "lcm"
    stochastic = True


class TestLCMShortScheduleVPrediction(SchedulerContract):
    plugin = "lcm"
    settings: ClassVar[dict[str, Any]] = {
        "original_inference_steps": 8,
        "timestep_scaling": 2.0,
        "prediction_type": "v_prediction",
        "num_train_timesteps": 200,
    }
    stochastic = True
