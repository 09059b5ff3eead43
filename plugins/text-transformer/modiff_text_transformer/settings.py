"""Parameters of the ``transformer`` text embedder (pydantic only: cheap to import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import modiff


class TextTransformerSettings(modiff.ComponentSettings):
    """The shape of the transformer and of its vocabulary."""

    width: int = Field(64, ge=8, le=2048, description="Width of every token vector (the text embedding's dim).")
    depth: int = Field(
        2, ge=0, le=24, description="Bidirectional transformer layers; 0 = word and position embeddings only."
    )
    heads: int = Field(4, ge=1, description="Attention heads per layer (must divide width).")
    mlp_ratio: int = Field(
        4, ge=1, le=16, description="Hidden width of each layer's feed-forward, as a multiple of width."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on attention weights and feed-forward outputs.")
    max_tokens: int = Field(
        32, ge=2, le=4096,
        description="Tokens per prompt, the start token included; longer prompts are truncated with a warning.",
    )
    lowercase: bool = Field(True, description="Lower-case words before fitting and lookup.")
    min_count: int = Field(1, ge=1, description="Words seen fewer times in the caption corpus are unknown (<unk>).")
    max_vocab: int | None = Field(
        None, ge=1, description="Keep at most this many words, the most frequent; default all."
    )
    pooled: Literal["mean", "start"] = Field(
        "mean", description="The pooled vector: the mean of the real tokens, or the start token's output."
    )
    pretext: Literal["none", "layout"] = Field(
        "none",
        description=(
            "A stage of its own before the denoiser's: 'layout' trains the tokens to predict the image's coarse "
            "colour map through one cross-attention layer (train.text_embedder sets its steps), so that colour and "
            "shape words carry their place; 'none' fits the vocabulary only."
        ),
    )
    joint_training: bool = Field(
        True,
        description=(
            "Train with the denoiser on the denoising loss (true), or keep the weights the layout pretext left "
            "(false: the tokens are computed once per caption, so each denoiser step is cheaper); false needs "
            "pretext = 'layout', or nothing would ever train the tokens."
        ),
    )
    pretext_grid: int = Field(16, ge=2, le=64, description="Side of the layout pretext's colour map, in cells.")
    seed: int = Field(0, ge=0, description="Seed of the initial weights (the same seed gives the same weights).")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TextTransformerSettings:
        if (self.depth or self.pretext != "none") and self.width % self.heads:
            choices = [h for h in range(1, min(self.width, 32) + 1) if self.width % h == 0]
            raise ValueError(
                f"heads = {self.heads} does not divide width = {self.width}; "
                f"set heads to one of {choices} or change width"
            )
        return self

    @model_validator(mode="after")
    def _frozen_needs_a_pretext(self) -> TextTransformerSettings:
        if not self.joint_training and self.pretext == "none":
            raise ValueError(
                "joint_training = false with pretext = 'none' would leave the tokens untrained; "
                "set pretext = 'layout', or joint_training = true"
            )
        return self
