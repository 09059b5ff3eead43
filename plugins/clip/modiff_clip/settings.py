"""Parameters of the ``clip`` text embedder (pydantic only: cheap to import)."""

from __future__ import annotations

from pydantic import Field, model_validator

import modiff

#: Fields that shape the small CLIP trained from scratch; meaningless with `pretrained`.
TINY_MODEL_FIELDS = (
    "width",
    "layers",
    "heads",
    "vision_width",
    "vision_layers",
    "vision_heads",
    "patch_size",
    "projection_dim",
    "vocab_size",
)


class ClipSettings(modiff.ComponentSettings):
    """A CLIP text encoder: loaded from a local folder, or a small one trained here."""

    pretrained: str | None = Field(
        None,
        description=(
            "A local Hugging Face folder with a CLIP text encoder (config.json, *.safetensors, tokenizer files), "
            "or a Stable Diffusion folder with text_encoder/ and tokenizer/. Nothing is ever downloaded. "
            "Without it, a small CLIP is trained contrastively on the dataset's image-caption pairs."
        ),
    )
    max_tokens: int = Field(
        77,
        ge=2,
        description="Tokens per prompt, start and end tokens included; "
        "longer prompts are truncated with a warning.",
    )
    skip_layers: int = Field(
        0, ge=0, description="Use the hidden state this many layers before the last (Stable Diffusion's 'clip skip')."
    )
    joint_training: bool = Field(
        False,
        description=(
            "Fine-tune the text tower with the denoiser on the denoising loss (after its contrastive stage, if any); "
            "false keeps it frozen, so its embeddings are computed once per caption."
        ),
    )
    width: int = Field(64, ge=8, description="Text tower width (the embedding dimension).")
    layers: int = Field(2, ge=1, description="Text tower transformer layers.")
    heads: int = Field(4, ge=1, description="Text tower attention heads (must divide width).")
    vision_width: int = Field(64, ge=8, description="Vision tower width (used only for training).")
    vision_layers: int = Field(2, ge=1, description="Vision tower transformer layers.")
    vision_heads: int = Field(4, ge=1, description="Vision tower attention heads (must divide vision_width).")
    patch_size: int | None = Field(None, ge=1, description="Vision patch size; default image_size / 8.")
    projection_dim: int = Field(64, ge=1, description="Width of the shared image-text space of the contrastive loss.")
    vocab_size: int = Field(
        1024,
        ge=514,
        description="BPE vocabulary: 512 byte tokens, 2 special tokens, and merges learned from the captions.",
    )

    @model_validator(mode="after")
    def _tiny_fields_need_no_pretrained(self) -> ClipSettings:
        if self.pretrained is not None:
            clash = [f for f in TINY_MODEL_FIELDS if f in self.model_fields_set]
            if clash:
                raise ValueError(
                    f"{', '.join(clash)} shape the small CLIP trained from scratch and cannot be combined with "
                    f"pretrained = {self.pretrained!r} (the folder's config decides); remove them or remove pretrained"
                )
        if self.width % self.heads:
            raise ValueError(f"heads = {self.heads} must divide width = {self.width}")
        if self.vision_width % self.vision_heads:
            raise ValueError(f"vision_heads = {self.vision_heads} must divide vision_width = {self.vision_width}")
        return self
