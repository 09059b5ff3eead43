"""Settings of the components this plugin registers (pydantic only: cheap to import)."""

from __future__ import annotations

from pydantic import Field

import modiff


class SdClipSettings(modiff.ComponentSettings):
    """A CLIP text encoder used exactly as Stable Diffusion uses it."""

    pretrained: str = Field(
        description="A local folder: a Hugging Face CLIP text-encoder folder (config.json, tokenizer files, optional "
        "*.safetensors), or a Stable Diffusion folder with text_encoder/ and tokenizer/. Without weights in the "
        "folder the encoder is built from config.json and its weights come from the run. Nothing is downloaded.",
    )
    max_tokens: int | None = Field(
        None,
        ge=2,
        description="Every prompt is padded (or truncated, with a warning) to this many tokens, start and end "
        "tokens included; default: the tokenizer's model_max_length (77 for SD).",
    )
    skip_layers: int = Field(
        0, ge=0, description="Use the hidden state this many layers before the last, through the final layer norm "
        "(diffusers' clip_skip).",
    )


class SdCrossAttentionSettings(modiff.ComponentSettings):
    """Stable Diffusion's conditioning: no parameters."""
