"""Settings of the ``dit`` denoiser (pydantic only: ``modiff plugins`` imports this module)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import modiff


class DiTSettings(modiff.ComponentSettings):
    """The keys a ``[denoiser]`` table with ``plugin = "dit"`` accepts.

    Sizes of the DiT paper for reference: DiT-S/2 is ``patch_size = 2``,
    ``width = 384``, ``depth = 12``, ``heads = 6``; DiT-B/2 is 768, 12, 12.
    """

    patch_size: int = Field(2, ge=1, description="Side of the square patches; the input size must be a multiple of it.")
    width: int = Field(128, ge=4, description="Width of every token (the hidden size).")
    depth: int = Field(4, ge=1, description="Number of DiT blocks.")
    heads: int = Field(4, ge=1, description="Attention heads; must divide width.")
    mlp_ratio: float = Field(4.0, gt=0, description="Hidden width of the MLP, as a multiple of width.")
    pos_embed: Literal["sinusoidal", "learned"] = Field(
        "sinusoidal",
        description='2D position embeddings: fixed "sinusoidal" (any input size) or "learned" for the '
        "denoiser's sample size (resized by interpolation for other sizes).",
    )
    frequency_dim: int = Field(256, ge=2, description="Sinusoidal features of the timestep before its MLP.")
    head: Literal["auto", "denoise", "segment"] = Field(
        "auto",
        description='"denoise": a prediction shaped like the input; "segment": per-pixel class logits and no time '
        'input; "auto": what the run\'s task asks for (segment for segmentation, else denoise).',
    )
    num_classes: int | None = Field(
        None, ge=1, description="Classes of the segmentation head; default: the dataset's number of classes."
    )

    @model_validator(mode="after")
    def _check(self) -> DiTSettings:
        if self.width % self.heads:
            raise ValueError(f"heads = {self.heads} must divide width = {self.width}")
        if self.pos_embed == "sinusoidal" and self.width % 4:
            raise ValueError(
                f"width = {self.width} must be a multiple of 4 for sinusoidal 2D position embeddings "
                "(a sine and a cosine per axis)"
            )
        return self
