"""Settings of the encoders (no torch here: settings load when plugins are listed)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import modiff

#: Channel widths used when only ``downscale`` is given: level ``i`` gets entry ``i``.
DEFAULT_CHANNELS: tuple[int, ...] = (32, 64, 64, 64, 64)
DEFAULT_DOWNSCALE = 4


class KLAutoencoderSettings(modiff.ComponentSettings):
    """Parameters of ``kl-autoencoder`` (the Stable Diffusion VAE architecture).

    The depth is set by ``channels`` (one width per level; ``f = 2^(levels-1)``)
    or by ``downscale`` alone (widths then come from ``32, 64, 64, ...``).
    Giving both is allowed when they agree, which lets a settings file state
    the downscale it expects next to explicit widths.
    """

    channels: list[int] | None = Field(
        None,
        description="Width of each level, e.g. [32, 64, 64]; levels = len(channels), downscale = 2^(levels-1).",
    )
    downscale: int | None = Field(
        None,
        description="Downscale factor f (1, 2, 4, 8, 16); derives the number of levels when channels is not given.",
    )
    latent_channels: int = Field(4, ge=1, description="Channels of the latent (SD uses 4).")
    layers_per_block: int = Field(1, ge=1, description="Residual blocks per encoder level (the decoder has one more).")
    norm_num_groups: int = Field(8, ge=1, description="GroupNorm groups; every width must be divisible by it.")
    mid_block_attention: bool = Field(True, description="Self-attention in the middle blocks (SD has it).")
    kl_weight: float = Field(
        1e-4,
        ge=0,
        description="Weight of the KL term (mean per latent element) against the reconstruction loss (mean per pixel).",
    )
    reconstruction_loss: Literal["l1", "mse", "both"] = Field(
        "mse",
        description=(
            "Pixel loss: l1, mse, or their sum. On mostly-black images L1 is drawn to an all-black "
            "output (its median) and learns colours far more slowly; see docs/autoencoders.md."
        ),
    )
    sample_posterior: bool = Field(
        False, description="encode() samples the posterior instead of returning its mean."
    )
    latent_normalization: Literal["per-channel", "global"] = Field(
        "per-channel",
        description=(
            "How finish_training() makes latents unit-variance: one shift and scale per channel, "
            "or one shared by all channels (the SD 1.x convention)."
        ),
    )
    normalization_batches: int = Field(
        32, ge=1, description="At most this many batches are read to estimate the latent statistics."
    )
    slice_size: int | None = Field(
        None,
        ge=1,
        description="Encode/decode at most this many images at a time, so memory does not grow with the batch.",
    )

    @model_validator(mode="after")
    def _consistent_depth(self) -> KLAutoencoderSettings:
        if self.downscale is not None:
            f = self.downscale
            if f < 1 or f & (f - 1) or f > 16:
                raise ValueError(
                    f"downscale = {f} is not supported: the kl-autoencoder halves the size once per extra level, "
                    "so use 1, 2, 4, 8 or 16"
                )
        if self.channels is not None:
            if not self.channels:
                raise ValueError("channels = [] has no level: give at least one width, e.g. [32, 64, 64]")
            if any(c < 1 for c in self.channels):
                raise ValueError(f"channels = {self.channels}: every width must be a positive integer")
            implied = 2 ** (len(self.channels) - 1)
            if self.downscale is not None and implied != self.downscale:
                levels = self.downscale.bit_length()
                raise ValueError(
                    f"channels = {self.channels} has {len(self.channels)} levels, which gives downscale {implied}, "
                    f"but downscale = {self.downscale}; give {levels} widths for downscale {self.downscale}, "
                    "or drop one of the two settings"
                )
        bad = [c for c in self.level_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"norm_num_groups = {self.norm_num_groups} does not divide the widths {bad} "
                f"(channels {self.level_channels}); choose widths that are multiples of it, or fewer groups"
            )
        return self

    @property
    def level_channels(self) -> list[int]:
        """The resolved width of every level."""
        if self.channels is not None:
            return list(self.channels)
        f = self.downscale if self.downscale is not None else DEFAULT_DOWNSCALE
        return list(DEFAULT_CHANNELS[: f.bit_length()])

    @property
    def resolved_downscale(self) -> int:
        return 2 ** (len(self.level_channels) - 1)
