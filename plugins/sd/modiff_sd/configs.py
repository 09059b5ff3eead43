"""diffusers configurations <-> modiff settings tables, and configurations read off tensor shapes.

Each function turns one component's diffusers ``config.json`` (a dict) into
the settings table modiff's own plugin takes (``unet``, ``kl-autoencoder``,
a sampler of ``modiff-schedulers``), or back. The tables only name those
plugins and their public settings keys; whether a table is valid is decided
by the plugin when the settings are resolved. Options that change the
computation and that modiff does not implement are refused by name.

A single-file checkpoint carries no configuration: :func:`unet_config_from_shapes`
and friends rebuild one from the tensor shapes plus SD 1.x's conventions
for what shapes cannot tell (8 attention heads in the UNet, 64-wide heads in
CLIP, 32 normalisation groups, latent scale 0.18215).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import modiff
from modiff.sampler_swap import schedule_keys
from modiff_unet.diffusers_layout import from_diffusers_config, settings_table

#: SD 1.x's training schedule and the sampler settings its releases ship with
#: (PNDM there; DDIM here, on the same timestep grid).
SD_SCHEDULER: dict[str, Any] = {
    "plugin": "ddim",
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
}
SD_LATENT_SCALE = 0.18215
#: SD 1.x's attention heads in the UNet (its configurations' `attention_head_dim`).
SD_UNET_HEADS = 8
CLIP_HEAD_WIDTH = 64
SD_NORM_GROUPS = 32
SD_IMAGE_SIZE = 512


def _config_error(component: str, key: str, value: Any, allowed: str) -> modiff.WeightsError:
    return modiff.WeightsError(
        f"the {component} configuration has {key} = {value!r}, which modiff's components do not implement "
        f"(supported: {allowed})"
    )


def _check(component: str, config: Mapping[str, Any], fixed: Mapping[str, Any], absent: tuple[str, ...]) -> None:
    for key, wanted in fixed.items():
        value = config.get(key, wanted)
        close = isinstance(wanted, float) and isinstance(value, (int, float)) and abs(value - wanted) < 1e-12
        if value != wanted and not close:
            raise _config_error(component, key, value, repr(wanted))
    for key in absent:
        if config.get(key) not in (None, False):
            raise _config_error(component, key, config[key], "null")


# --------------------------------------------------------------------------
# UNet: modiff-unet's translator (the one copy), plus what SD's runs need
# --------------------------------------------------------------------------


def unet_table(config: Mapping[str, Any], *, precision: str = "fp32") -> dict[str, Any]:
    """The ``unet`` settings table for a ``UNet2DConditionModel`` configuration.

    The translation is modiff-unet's (:func:`modiff_unet.diffusers_layout.from_diffusers_config`);
    on top of it an SD run has text conditioning only, so a class-embedding
    input is refused here.
    """
    settings, spec = from_diffusers_config(config, precision=precision)
    if spec.conditioning.vector_dim is not None:
        raise _config_error(
            "unet", "class_embed_type", config.get("class_embed_type"), "None (SD conditions on text only)"
        )
    return {**settings_table(settings), "cross_attention_dim": settings.cross_attention_dim}


# --------------------------------------------------------------------------
# Autoencoder
# --------------------------------------------------------------------------

_VAE_FIXED: dict[str, Any] = {
    "act_fn": "silu", "in_channels": 3, "out_channels": 3, "use_quant_conv": True, "use_post_quant_conv": True
}
_VAE_ABSENT = ("latents_mean", "latents_std", "shift_factor")


def vae_table(config: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
    """The ``kl-autoencoder`` table for an ``AutoencoderKL`` configuration, and its latent scale."""
    _check("vae", config, _VAE_FIXED, _VAE_ABSENT)
    channels = list(config.get("block_out_channels", (64,)))
    for key, wanted in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        types = list(config.get(key, [wanted] * len(channels)))
        if types != [wanted] * len(channels):
            raise _config_error("vae", key, types, f"{wanted} on each of the {len(channels)} levels")
    table = {
        "plugin": "kl-autoencoder",
        "channels": channels,
        "latent_channels": int(config.get("latent_channels", 4)),
        "layers_per_block": int(config.get("layers_per_block", 1)),
        "norm_num_groups": int(config.get("norm_num_groups", SD_NORM_GROUPS)),
        "mid_block_attention": bool(config.get("mid_block_add_attention", True)),
        "latent_normalization": "global",
    }
    return table, float(config.get("scaling_factor") or SD_LATENT_SCALE)


# --------------------------------------------------------------------------
# Scheduler
# --------------------------------------------------------------------------

#: diffusers scheduler class -> modiff sampler (PNDM, SD 1.x's default, is not
#: implemented here: DDIM on the same schedule and grid replaces it).
SAMPLERS: dict[str, str] = {
    "DDIMScheduler": "ddim",
    "DDPMScheduler": "ddpm",
    "PNDMScheduler": "ddim",
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler-ancestral",
    "HeunDiscreteScheduler": "heun",
    "LMSDiscreteScheduler": "lms",
    "DPMSolverMultistepScheduler": "dpmpp-2m",
    "UniPCMultistepScheduler": "unipc",
    "LCMScheduler": "lcm",  # LCM-distilled weights, or SD with an LCM-LoRA fused in
}
#: Timestep spacing of each diffusers class when a (pre-0.19) config leaves it out.
_DEFAULT_SPACING = {"DDIMScheduler": "leading", "DDPMScheduler": "leading", "PNDMScheduler": "leading"}
#: diffusers class -> its own options (beyond the noise schedule) that mean the same
#: in the modiff sampler it maps to: diffusers key -> modiff key. Everything else
#: of the sampler starts at modiff's defaults (:mod:`modiff.sampler_swap`).
_OWN_OPTIONS: dict[str, dict[str, str]] = {
    "DDIMScheduler": {"set_alpha_to_one": "set_alpha_to_one"},
    "PNDMScheduler": {"set_alpha_to_one": "set_alpha_to_one"},  # its last step lands where DDIM's does
    "DDPMScheduler": {"variance_type": "variance_type"},
    "EulerDiscreteScheduler": {"use_karras_sigmas": "use_karras_sigmas"},
    "EulerAncestralDiscreteScheduler": {},
    "HeunDiscreteScheduler": {"use_karras_sigmas": "use_karras_sigmas"},
    "LMSDiscreteScheduler": {"use_karras_sigmas": "use_karras_sigmas"},
    "DPMSolverMultistepScheduler": {"solver_type": "solver_type", "use_karras_sigmas": "use_karras_sigmas"},
    "UniPCMultistepScheduler": {
        "solver_order": "order",
        "solver_type": "solver_type",
        "use_karras_sigmas": "use_karras_sigmas",
        "disable_corrector": "disable_corrector",
    },
    "LCMScheduler": {"original_inference_steps": "original_inference_steps", "timestep_scaling": "timestep_scaling"},
}


def scheduler_table(config: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A sampler table for a diffusers scheduler configuration, and a note when it is not the same sampler.

    The noise schedule (what the sampler's settings model declares as its
    ``schedule_keys``) is read from the configuration; of the sampler's own
    options only those with a modiff equivalent (``_OWN_OPTIONS``) are.
    """
    cls = str(config.get("_class_name", "DDIMScheduler"))
    if cls not in SAMPLERS:
        raise _config_error("scheduler", "_class_name", cls, ", ".join(SAMPLERS))
    if config.get("trained_betas") is not None:
        raise _config_error("scheduler", "trained_betas", "(a list)", "null: one of the named beta schedules")
    sampler = SAMPLERS[cls]
    if cls == "DPMSolverMultistepScheduler":
        kind = config.get("algorithm_type", "dpmsolver++")
        sampler = {"dpmsolver++": "dpmpp-2m", "sde-dpmsolver++": "dpmpp-2m-sde"}.get(kind, "")
        if not sampler or config.get("solver_order", 2) != 2:
            raise _config_error(
                "scheduler", "algorithm_type/solver_order", (kind, config.get("solver_order")),
                "dpmsolver++ or sde-dpmsolver++ with solver_order 2",
            )
    model = modiff.registry().lookup("scheduler", sampler).settings_model
    table: dict[str, Any] = {"plugin": sampler}
    for key in schedule_keys(model) or ():
        if config.get(key) is not None:
            table[key] = config[key]
    for theirs, ours in _OWN_OPTIONS[cls].items():
        if config.get(theirs) is not None:
            table[ours] = config[theirs]
    table.setdefault("timestep_spacing", _DEFAULT_SPACING.get(cls, "linspace"))
    note = None
    if cls == "PNDMScheduler":
        note = "the source samples with PNDM, which modiff does not implement; the run uses DDIM on the same schedule"
    return table, note


#: modiff sampler -> (diffusers class, fixed config entries).
DIFFUSERS_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp-2m-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}
#: modiff keys diffusers' configs do not have (they are call arguments there, or not offered).
_NOT_IN_CONFIG = {"loss_weighting", "snr_gamma", "eta", "s_churn", "s_tmin", "s_tmax", "s_noise"}


def scheduler_config(sampler: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The diffusers scheduler configuration of a modiff sampler's resolved settings."""
    if sampler not in DIFFUSERS_SCHEDULERS:
        raise modiff.ModiffError(f"sampler {sampler!r} has no diffusers equivalent ({', '.join(DIFFUSERS_SCHEDULERS)})")
    cls, fixed = DIFFUSERS_SCHEDULERS[sampler]
    inverse = {ours: theirs for theirs, ours in _OWN_OPTIONS[cls].items()}
    out: dict[str, Any] = {"_class_name": cls}
    for key, value in params.items():
        if key in _NOT_IN_CONFIG or (sampler == "lms" and key == "order"):
            continue
        out[inverse.get(key, key)] = value
    out.update(fixed)
    return out


# --------------------------------------------------------------------------
# Configurations from tensor shapes (single-file checkpoints)
# --------------------------------------------------------------------------

Shape = Callable[[str], tuple[int, ...]]


def _count(names: list[str], prefix: str) -> int:
    return len({n[len(prefix) :].split(".", 1)[0] for n in names if n.startswith(prefix)})


def unet_config_from_shapes(names: list[str], shape: Shape, *, sample_size: int) -> dict[str, Any]:
    """A ``UNet2DConditionModel`` configuration for diffusers-named UNet tensors."""
    levels = _count(names, "down_blocks.")
    attention = [any(n.startswith(f"down_blocks.{L}.attentions.") for n in names) for L in range(levels)]
    first = next(i for i, a in enumerate(attention + [True]) if a)
    attn = f"down_blocks.{first}.attentions.0" if first < levels else "mid_block.attentions.0"
    mid_attention = any(n.startswith("mid_block.attentions.") for n in names)
    return {
        "block_out_channels": [shape(f"down_blocks.{L}.resnets.0.conv1.weight")[0] for L in range(levels)],
        "layers_per_block": _count(names, "down_blocks.0.resnets."),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_attention else "UNetMidBlock2D",
        "attention_head_dim": SD_UNET_HEADS,
        "transformer_layers_per_block": _count(names, f"{attn}.transformer_blocks."),
        "cross_attention_dim": shape(f"{attn}.transformer_blocks.0.attn2.to_k.weight")[1],
        "use_linear_projection": len(shape(f"{attn}.proj_in.weight")) == 2,
        "in_channels": shape("conv_in.weight")[1],
        "out_channels": shape("conv_out.weight")[0],
        "norm_num_groups": SD_NORM_GROUPS,
        "sample_size": sample_size,
    }


def vae_config_from_shapes(names: list[str], shape: Shape) -> dict[str, Any]:
    """An ``AutoencoderKL`` configuration for diffusers-named autoencoder tensors."""
    levels = _count(names, "encoder.down_blocks.")
    channels = [shape(f"encoder.down_blocks.{L}.resnets.0.conv1.weight")[0] for L in range(levels)]
    return {
        "block_out_channels": channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": _count(names, "encoder.down_blocks.0.resnets."),
        "latent_channels": shape("post_quant_conv.weight")[0],
        "norm_num_groups": SD_NORM_GROUPS,
        "mid_block_add_attention": any(n.startswith("encoder.mid_block.attentions.") for n in names),
        "scaling_factor": SD_LATENT_SCALE,
    }


def text_config_from_shapes(names: list[str], shape: Shape, tokenizer: Any) -> dict[str, Any]:
    """A ``CLIPTextModel`` configuration for ``text_model.*`` tensors and a tokenizer."""
    vocab, hidden = shape("text_model.embeddings.token_embedding.weight")
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": shape("text_model.encoder.layers.0.mlp.fc1.weight")[0],
        "num_hidden_layers": _count(names, "text_model.encoder.layers."),
        "num_attention_heads": max(1, hidden // CLIP_HEAD_WIDTH),
        "max_position_embeddings": shape("text_model.embeddings.position_embedding.weight")[0],
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": hidden,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
