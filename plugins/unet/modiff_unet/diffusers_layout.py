"""diffusers' ``UNet2DConditionModel`` configuration <-> this plugin's settings.

The UNet's parameters are laid out like diffusers' ``UNet2DConditionModel``,
so weights saved by diffusers load with ``strict=True`` once the shape is
known. This module is the one translator of that configuration (its
``config.json``) in modiff: :func:`from_diffusers_config` reads it into
settings and a spec, refusing by name every option that changes the
computation and that this UNet does not implement, and
:func:`to_diffusers_config` writes one back. ``modiff-sd``'s import and export
go through it. It only reads and writes dictionaries: diffusers itself is
never imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

import modiff
from modiff.protocols import ConditioningSpec, DenoiserSpec

from .config import UNetSettings

__all__ = [
    "DiffusersConfigError",
    "from_diffusers_config",
    "settings_table",
    "to_diffusers_config",
    "unet_from_diffusers_config",
]

#: Options that change the computation and have only the listed values here
#: (a missing key means diffusers' default, which is the listed value).
_REQUIRED: dict[str, Any] = {
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "norm_eps": 1e-5,
    "time_embedding_type": "positional",
    "resnet_time_scale_shift": "default",
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "center_input_sample": False,
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "class_embeddings_concat": False,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "attention_type": "default",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
}
#: Options that must be absent (None or False) because nothing here implements them.
_ABSENT = (
    "addition_embed_type",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "time_cond_proj_dim",
    "time_embedding_dim",
    "time_embedding_act_fn",
    "timestep_post_act",
    "num_class_embeds",
    "cross_attention_norm",
    "reverse_transformer_layers_per_block",
    "mid_block_only_cross_attention",
)
_DOWN = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
_UP = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}
_MID = {"UNetMidBlock2DCrossAttn": True, "UNetMidBlock2D": False}
#: diffusers' defaults where a configuration leaves a key out (SD 1.x's values).
_DEFAULT_HEADS = 8
_DEFAULT_GROUPS = 32


class DiffusersConfigError(modiff.WeightsError, ValueError):
    """A diffusers UNet configuration this UNet cannot reproduce; names the option.

    A :class:`modiff.WeightsError` (exit status 2 from the CLI, no traceback)
    and a ``ValueError`` for code that reads configurations itself.
    """


def _refuse(key: str, value: Any, allowed: str) -> DiffusersConfigError:
    return DiffusersConfigError(
        f"the diffusers UNet configuration has {key} = {value!r}, which modiff's UNet does not implement "
        f"(supported: {allowed})"
    )


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(value - wanted) < 1e-12
    return bool(value == wanted)


def _one(config: Mapping[str, Any], key: str, default: Any) -> Any:
    """A per-level option that must hold one value on every level, as that value."""
    value = config.get(key, default)
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise _refuse(key, value, "the same value on every level")
        return value[0]
    return value


def _per_level(value: Any) -> int | list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else int(value)


def _check_options(config: Mapping[str, Any], precision: str) -> None:
    for key, wanted in _REQUIRED.items():
        if key in config and not _same(config[key], wanted):
            raise _refuse(key, config[key], repr(wanted))
    for key in _ABSENT:
        if config.get(key) not in (None, False):
            raise _refuse(key, config[key], "None")
    if config.get("upcast_attention") and precision != "fp32":
        # Upcasting computes attention in float32; at fp32 precision everything already is.
        raise _refuse("upcast_attention", True, 'false, or true with [run] precision = "fp32"')


def from_diffusers_config(
    config: Mapping[str, Any],
    *,
    concat_channels: int = 0,
    sample_size: int | None = None,
    precision: str = "fp32",
) -> tuple[UNetSettings, DenoiserSpec]:
    """Settings and spec for a ``UNet2DConditionModel`` configuration.

    Args:
        config: the diffusers configuration (``model.config`` or ``config.json``).
        concat_channels: how many of diffusers' ``in_channels`` are
            conditioning channels concatenated to ``x_t`` (inpainting UNets: 5).
        sample_size: overrides ``config["sample_size"]``.
        precision: the run's precision; ``upcast_attention = true`` is only
            exact at ``"fp32"``.

    Raises:
        DiffusersConfigError: for an option this UNet does not implement, naming it.
    """
    _check_options(config, precision)
    channels = list(config.get("block_out_channels", (320, 640, 1280, 1280)))
    levels = len(channels)
    down = list(config.get("down_block_types", ()))
    up = list(config.get("up_block_types", ()))
    if len(down) != levels or len(up) != levels:
        raise _refuse("down_block_types/up_block_types", (down, up), f"{levels} entries each, one per level")
    attention_levels = []
    for level, (d, u) in enumerate(zip(down, reversed(up), strict=True)):
        if d not in _DOWN:
            raise _refuse("down_block_types", d, " or ".join(_DOWN))
        if u not in _UP:
            raise _refuse("up_block_types", u, " or ".join(_UP))
        if _DOWN[d] != _UP[u]:
            raise DiffusersConfigError(
                f"level {level} of the diffusers UNet configuration has attention on one side only ({d} / {u}); "
                "both sides must match"
            )
        if _DOWN[d]:
            attention_levels.append(level)
    mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid not in _MID:
        raise _refuse("mid_block_type", mid, " or ".join(_MID))
    depth = config.get("transformer_layers_per_block", 1)
    if isinstance(depth, (list, tuple)) and any(isinstance(d, (list, tuple)) for d in depth):
        raise _refuse("transformer_layers_per_block", depth, "one number, or one per level")
    vector_dim = None
    class_type = config.get("class_embed_type")
    if class_type == "projection":
        vector_dim = int(config["projection_class_embeddings_input_dim"])
    elif class_type is not None:
        raise _refuse("class_embed_type", class_type, "None or 'projection'")
    # diffusers' historical naming: `attention_head_dim` holds the number of heads
    # when `num_attention_heads` is not given (every SD 1.x/2.x configuration).
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", _DEFAULT_HEADS)
    cross = int(_one(config, "cross_attention_dim", 1280))
    try:
        settings = UNetSettings(
            channels=channels,
            layers_per_block=_per_level(config.get("layers_per_block", 2)),
            attention_levels=attention_levels,
            mid_attention=_MID[mid],
            heads=_per_level(heads),
            transformer_depth=_per_level(depth),
            cross_attention_dim=cross,
            use_linear_projection=bool(config.get("use_linear_projection", False)),
            dropout=float(config.get("dropout", 0.0)),
            norm_num_groups=int(config.get("norm_num_groups", _DEFAULT_GROUPS)),
            head="denoise",
        )
    except pydantic.ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise DiffusersConfigError(f"the diffusers UNet configuration does not make a valid UNet: {problems}") from None
    in_channels = int(config.get("in_channels", 4))
    if not 0 <= concat_channels < in_channels:
        raise ValueError(f"concat_channels = {concat_channels} must be in [0, in_channels = {in_channels})")
    spec = DenoiserSpec(
        in_channels=in_channels - concat_channels,
        out_channels=int(config.get("out_channels", 4)),
        sample_size=int(sample_size or config.get("sample_size") or 64),
        conditioning=ConditioningSpec(concat_channels=concat_channels, context_dim=cross, vector_dim=vector_dim),
    )
    return settings, spec


def settings_table(settings: UNetSettings) -> dict[str, Any]:
    """``settings`` as a ``[denoiser]`` table: ``plugin = "unet"`` and the
    keys that differ from the defaults."""
    return {"plugin": "unet", **settings.model_dump(mode="json", exclude_defaults=True)}


def to_diffusers_config(
    settings: UNetSettings | Mapping[str, Any], *, in_channels: int, sample_size: int
) -> dict[str, Any]:
    """The ``UNet2DConditionModel`` configuration of a denoising ``unet``.

    The settings need an explicit ``cross_attention_dim`` (the width the run's
    conditioner gives); ``heads`` default to the UNet's own rule, heads of
    ``head_dim`` (32) channels.
    """
    s = settings if isinstance(settings, UNetSettings) else UNetSettings.model_validate(dict(settings))
    if s.cross_attention_dim is None:
        raise ValueError("to_diffusers_config needs settings with cross_attention_dim (the conditioner's width)")
    levels = len(s.channels)
    attention = set(range(levels) if s.attention_levels is None else s.attention_levels)
    heads: int | list[int]
    if s.heads is not None:
        heads = s.heads
    else:
        dims = [d or 32 for d in s.per_level("head_dim")]
        if any(c % d for c, d in zip(s.channels, dims, strict=True)):
            raise ValueError(f"head_dim {dims} does not divide the channels {s.channels}: set heads explicitly")
        heads = [c // d for c, d in zip(s.channels, dims, strict=True)]
    return {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": heads,
        "block_out_channels": list(s.channels),
        "center_input_sample": False,
        "cross_attention_dim": s.cross_attention_dim,
        "down_block_types": ["CrossAttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(levels)],
        "downsample_padding": 1,
        "dropout": s.dropout,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": in_channels,
        "layers_per_block": s.layers_per_block,
        "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn" if s.mid_attention else "UNetMidBlock2D",
        "norm_eps": 1e-5,
        "norm_num_groups": s.norm_num_groups,
        "out_channels": in_channels,
        "sample_size": sample_size,
        "transformer_layers_per_block": s.transformer_depth,
        "up_block_types": ["CrossAttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(range(levels))],
        "upcast_attention": False,
        "use_linear_projection": s.use_linear_projection,
    }


def unet_from_diffusers_config(config: Mapping[str, Any], *, concat_channels: int = 0) -> Any:
    """A UNet (random weights) shaped like the diffusers configuration; load the state dict next."""
    from .unet import UNet

    settings, spec = from_diffusers_config(config, concat_channels=concat_channels)
    return UNet(settings, spec, head="denoise", cross_attention_dim=spec.conditioning.context_dim)
