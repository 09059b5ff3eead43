"""Reading a diffusers ``UNet2DConditionModel`` configuration (its ``config.json``).

The UNet's parameters are laid out like diffusers' ``UNet2DConditionModel``,
so weights saved by diffusers load with ``strict=True`` once the shape is
known. This module turns the diffusers configuration dictionary into this
plugin's settings and spec. It only reads a dictionary: diffusers itself is
never imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modiff.protocols import ConditioningSpec, DenoiserSpec

from .config import UNetSettings

#: Options that change the computation and have only the listed values here.
_REQUIRED = {
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "norm_eps": 1e-5,
    "time_embedding_type": "positional",
    "resnet_time_scale_shift": "default",
    "center_input_sample": False,
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "upcast_attention": False,
    "class_embeddings_concat": False,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "attention_type": "default",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
}
#: Options that must be absent (None) because nothing here implements them.
_ABSENT = (
    "addition_embed_type",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "time_cond_proj_dim",
    "time_embedding_dim",
    "time_embedding_act_fn",
    "timestep_post_act",
    "num_class_embeds",
    "reverse_transformer_layers_per_block",
)


def _per_level(value: Any, levels: int) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * levels


def from_diffusers_config(
    config: Mapping[str, Any], *, concat_channels: int = 0, sample_size: int | None = None
) -> tuple[UNetSettings, DenoiserSpec]:
    """Settings and spec for a ``UNet2DConditionModel`` configuration.

    Args:
        config: the diffusers configuration (``model.config`` or ``config.json``).
        concat_channels: how many of diffusers' ``in_channels`` are
            conditioning channels concatenated to ``x_t`` (inpainting UNets: 5).
        sample_size: overrides ``config["sample_size"]``.

    Raises:
        ValueError: for an option this UNet does not implement, naming it.
    """
    for key, wanted in _REQUIRED.items():
        if key in config and config[key] != wanted and not (key == "norm_eps" and abs(config[key] - wanted) < 1e-12):
            raise ValueError(f"diffusers option {key} = {config[key]!r} is not supported; only {wanted!r} is")
    for key in _ABSENT:
        if config.get(key) is not None:
            raise ValueError(f"diffusers option {key} = {config[key]!r} is not supported; only None is")

    channels = list(config.get("block_out_channels", (320, 640, 1280, 1280)))
    levels = len(channels)
    down = list(config.get("down_block_types", ()))
    up = list(config.get("up_block_types", ()))
    if len(down) != levels or len(up) != levels:
        raise ValueError(f"down_block_types and up_block_types need {levels} entries, one per level")
    attention_levels = []
    for level, (d, u) in enumerate(zip(down, reversed(up), strict=True)):
        has_down = d == "CrossAttnDownBlock2D"
        if d not in ("CrossAttnDownBlock2D", "DownBlock2D"):
            raise ValueError(f"down block type {d!r} is not supported (CrossAttnDownBlock2D or DownBlock2D)")
        if u not in ("CrossAttnUpBlock2D", "UpBlock2D"):
            raise ValueError(f"up block type {u!r} is not supported (CrossAttnUpBlock2D or UpBlock2D)")
        if has_down != (u == "CrossAttnUpBlock2D"):
            raise ValueError(f"level {level} has attention on one side only ({d} / {u}); both sides must match")
        if has_down:
            attention_levels.append(level)

    mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid not in ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D"):
        raise ValueError(f"mid_block_type {mid!r} is not supported (UNetMidBlock2DCrossAttn or UNetMidBlock2D)")

    layers = config.get("layers_per_block", 2)
    if isinstance(layers, (list, tuple)):
        if len(set(layers)) != 1:
            raise ValueError(f"layers_per_block must be the same on every level, got {layers}")
        layers = layers[0]
    # diffusers' historical naming: `attention_head_dim` is the number of heads
    # when `num_attention_heads` is not given.
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    cross = config.get("cross_attention_dim", 1280)
    if isinstance(cross, (list, tuple)):
        if len(set(cross)) != 1:
            raise ValueError(f"cross_attention_dim must be the same on every level, got {cross}")
        cross = cross[0]
    depth = config.get("transformer_layers_per_block", 1)
    if isinstance(depth, (list, tuple)) and any(isinstance(d, (list, tuple)) for d in depth):
        raise ValueError("nested transformer_layers_per_block is not supported")

    vector_dim = None
    class_type = config.get("class_embed_type")
    if class_type == "projection":
        vector_dim = int(config["projection_class_embeddings_input_dim"])
    elif class_type is not None:
        raise ValueError(f"class_embed_type {class_type!r} is not supported (None or 'projection')")

    settings = UNetSettings(
        channels=channels,
        layers_per_block=int(layers),
        attention_levels=attention_levels,
        mid_attention=mid == "UNetMidBlock2DCrossAttn",
        heads=_per_level(heads, levels) if isinstance(heads, (list, tuple)) else int(heads),
        transformer_depth=_per_level(depth, levels) if isinstance(depth, (list, tuple)) else int(depth),
        cross_attention_dim=int(cross),
        use_linear_projection=bool(config.get("use_linear_projection", False)),
        dropout=float(config.get("dropout", 0.0)),
        norm_num_groups=int(config.get("norm_num_groups", 32)),
        head="denoise",
    )
    in_channels = int(config.get("in_channels", 4))
    if not 0 <= concat_channels < in_channels:
        raise ValueError(f"concat_channels = {concat_channels} must be in [0, in_channels = {in_channels})")
    spec = DenoiserSpec(
        in_channels=in_channels - concat_channels,
        out_channels=int(config.get("out_channels", 4)),
        sample_size=int(sample_size or config.get("sample_size") or 64),
        conditioning=ConditioningSpec(concat_channels=concat_channels, context_dim=int(cross), vector_dim=vector_dim),
    )
    return settings, spec


def unet_from_diffusers_config(config: Mapping[str, Any], *, concat_channels: int = 0) -> Any:
    """A UNet (random weights) shaped like the diffusers configuration; load the state dict next."""
    from .unet import UNet

    settings, spec = from_diffusers_config(config, concat_channels=concat_channels)
    return UNet(settings, spec, head="denoise", cross_attention_dim=spec.conditioning.context_dim)
