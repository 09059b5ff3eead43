"""Settings of the conditioners (no torch here: `modiff plugins` imports this)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import modiff


class ImageContextSettings(modiff.ComponentSettings):
    """What every conditioner accepts: extra image channels (a mask, a masked image latent)."""

    image_context_channels: int | None = Field(
        None,
        ge=0,
        description="Channels of an image context (given at the latent resolution) appended to the concatenated "
        "channels; 0 for none. Default: what the run's task needs (a one-hot map for mask-to-image, mask and "
        "masked-image latent for inpainting, none otherwise).",
    )

    def image_channels(self, context: modiff.BuildContext) -> int:
        """The setting, or the run's task's need (``BuildContext.image_context_channels``)."""
        if self.image_context_channels is not None:
            return self.image_context_channels
        return int(getattr(context, "image_context_channels", 0) or 0)


class TextSettings(ImageContextSettings):
    """What every text-using conditioner shares: how the unconditional input looks."""

    null: Literal["learned", "zeros"] = Field(
        "learned",
        description='The null conditioning (condition dropout, classifier-free guidance): "learned" embeddings '
        'trained with the denoiser (initialised to zero), or fixed "zeros".',
    )


class CrossAttentionSettings(TextSettings):
    context_dim: int | None = Field(
        None, ge=1, description="Width of the context the denoiser cross-attends to; default: the text width."
    )
    projection: bool = Field(
        True,
        description="Project the token embeddings with a learned linear layer; false passes them through unchanged "
        "(as Stable Diffusion feeds CLIP's hidden states; context_dim must then equal the text width).",
    )
    vector: bool = Field(
        False,
        description="Also add the pooled text embedding, through a learned linear layer, to the denoiser's time "
        "embedding (as SDXL adds its pooled text), so every residual block hears the prompt as a whole, not only "
        "the layers that cross-attend.",
    )


class ConcatSettings(TextSettings):
    channels: int = Field(4, ge=1, description="Feature maps the pooled text embedding is projected to.")


class VectorSettings(TextSettings):
    vector_dim: int | None = Field(
        None, ge=1, description="Width of the vector added to the time embedding; default: the text width."
    )


class HybridSettings(CrossAttentionSettings):
    channels: int = Field(4, ge=1, description="Feature maps the pooled text embedding is projected to.")


class NoneSettings(ImageContextSettings):
    """The unconditional conditioner takes only an optional image context."""
