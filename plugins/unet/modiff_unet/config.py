"""Settings of the UNet denoiser (no torch here: `modiff plugins` imports this)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import modiff

IntPerLevel = int | list[int]
"""One value for every level, or a list with one value per level."""


class UNetSettings(modiff.ComponentSettings):
    """The UNet's shape. Names follow the Stable Diffusion UNet where one exists."""

    channels: list[int] = Field(
        default_factory=lambda: [64, 128],
        min_length=1,
        description="Channels of each resolution level, highest resolution first; "
        "every level but the last halves the resolution (SD 1.x: [320, 640, 1280, 1280]).",
    )
    layers_per_block: IntPerLevel = Field(
        2,
        description="Residual blocks per level on the way down, one more on the way up (per level or one for all): "
        "depth where it is cheap, at the low-resolution levels, or where the detail is drawn.",
    )
    attention_levels: list[int] | None = Field(
        None,
        description="Indices of the levels that have transformer blocks (SD 1.x: [0, 1, 2]); "
        "default: every level.",
    )
    mid_attention: bool = Field(
        True,
        description="Whether the middle block is residual, transformer, residual (true) or one residual block (false).",
    )
    heads: IntPerLevel | None = Field(
        None, description="Attention heads (per level or one for all); give this or head_dim, not both."
    )
    head_dim: IntPerLevel | None = Field(
        None, description="Width of one attention head (per level or one for all); default 32 when heads is not given."
    )
    transformer_depth: IntPerLevel = Field(
        1, description="Transformer blocks per attention layer (per level or one for all)."
    )
    cross_attention_dim: int | None = Field(
        None,
        ge=1,
        description="Width of the context the transformer blocks cross-attend to; default: the conditioner's "
        "context width. Without any, the transformer blocks only self-attend.",
    )
    attention_positions: bool = Field(
        False,
        description="Add each pixel's position (sines and cosines of its coordinates, through a learned map that "
        "starts at zero) to the tokens of every transformer block, so attention knows where a pixel is and "
        "cross-attention can bind the words naming a place to that place. Off: SD's layout.",
    )
    use_linear_projection: bool = Field(
        False, description="Linear layers instead of 1x1 convolutions around the transformer blocks (SD 2.x style)."
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout in residual blocks, attention outputs and feed-forwards."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations of each block in the backward pass to save memory (training only)."
    )
    norm_num_groups: int = Field(32, ge=1, description="GroupNorm groups; must divide every level's channels.")
    head: Literal["auto", "denoise", "segment"] = Field(
        "auto",
        description='"denoise": a prediction shaped like the input; "segment": per-pixel class logits and no time '
        'input; "auto": what the run\'s task asks for (segment for segmentation, else denoise).',
    )
    num_classes: int | None = Field(
        None, ge=1, description="Classes of the segmentation head; default: the dataset's number of classes."
    )
    init_from: str | None = Field(
        None,
        description="Start from another run's weights: a run folder (its committed denoiser, e.g. \"runs/x\") or a "
        ".safetensors file. Every tensor whose name and shape match is loaded, the rest (time embedding, output "
        "layer, cross-attention when heads or contexts differ) keeps its fresh initialisation, and what was skipped "
        "is logged. Read when the UNet is built (relative to the current directory), so it must exist then.",
    )

    @model_validator(mode="after")
    def _check(self) -> UNetSettings:
        if self.init_from is not None and not self.init_from.strip():
            raise ValueError('init_from is empty; name a run folder ("runs/x") or a .safetensors file, or leave it out')
        levels = len(self.channels)
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels must all be positive, got {self.channels}")
        if self.heads is not None and self.head_dim is not None:
            raise ValueError("give heads or head_dim, not both (the other follows from the channels)")
        for name in ("layers_per_block", "heads", "head_dim", "transformer_depth"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != levels:
                raise ValueError(
                    f"{name} has {len(value)} entries but channels has {levels} levels; "
                    f"give one value per level or a single number"
                )
            values = value if isinstance(value, list) else [value]
            if any(v is not None and v < 1 for v in values):
                raise ValueError(f"{name} must be positive, got {value}")
        if self.attention_levels is not None:
            bad = [i for i in self.attention_levels if not 0 <= i < levels]
            if bad:
                raise ValueError(
                    f"attention_levels {bad} do not exist: with {levels} levels use indices 0..{levels - 1}"
                )
        for c in self.channels:
            if c % self.norm_num_groups:
                raise ValueError(
                    f"norm_num_groups = {self.norm_num_groups} does not divide level channels {c}; "
                    f"choose groups dividing every entry of channels = {self.channels}"
                )
        return self

    def per_level(self, name: str) -> list[int | None]:
        """A per-level setting expanded to one entry per level."""
        value = getattr(self, name)
        return list(value) if isinstance(value, list) else [value] * len(self.channels)
