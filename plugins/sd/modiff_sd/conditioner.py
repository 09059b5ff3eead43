"""``sd-cross-attention``: Stable Diffusion's conditioning, and its null.

The context is the text embedder's token states, unchanged (SD's UNet
cross-attends to CLIP's hidden states directly). The null conditioning,
used by classifier-free guidance and condition dropout, is what SD uses:
the text embedder's embedding of the empty prompt. That is why this
conditioner holds a reference to the run's text embedder (not a copy:
its weights stay the text embedder's and are saved with it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from modiff.protocols import Conditioning, ConditioningSpec, TextEmbedder, TextEmbedding


def _no_image(image_context: Tensor | None) -> None:
    if image_context is not None:
        raise ValueError(
            "sd-cross-attention takes no image context (text-to-image only); use the cross-attention conditioner "
            "with image_context_channels for inpainting or mask-to-image"
        )


class SdCrossAttention(nn.Module):
    """Token states as the cross-attention context; the empty prompt as the null."""

    def __init__(self, text_embedder: TextEmbedder):
        super().__init__()
        # A plain attribute, not a submodule: the text embedder's weights belong to its own role.
        self.__dict__["text_embedder"] = text_embedder
        self.spec = ConditioningSpec(context_dim=int(text_embedder.dim))

    def condition(
        self, text: TextEmbedding | None, *, image_context: Tensor | None = None, batch_size: int | None = None
    ) -> Conditioning:
        _no_image(image_context)
        if text is None:
            if batch_size is None:
                raise ValueError("condition(None) needs batch_size")
            return self.null(batch_size)
        if text.tokens.shape[-1] != self.spec.context_dim:
            raise ValueError(
                f"the text embedding is {text.tokens.shape[-1]} wide but this conditioner was built for "
                f"{self.spec.context_dim}; build it with the same text embedder"
            )
        if batch_size is not None and batch_size != len(text):
            raise ValueError(f"inconsistent batch sizes: text has {len(text)} rows, batch_size = {batch_size}")
        return Conditioning(context=text.tokens, context_mask=text.mask.to(torch.bool))

    def null(
        self, batch_size: int, *, like: TextEmbedding | None = None, image_context: Tensor | None = None
    ) -> Conditioning:
        """The empty prompt's embedding for every row, as long as ``like``'s tokens
        (cut or padded with masked zeros; SD's embeddings all have one length)."""
        _no_image(image_context)
        with torch.no_grad():
            empty = self.text_embedder.embed([""])
        tokens, mask = empty.tokens, empty.mask.to(torch.bool)
        if like is not None:
            length = int(like.tokens.shape[1])
            tokens, mask = tokens[:, :length], mask[:, :length]
            missing = length - int(tokens.shape[1])
            if missing > 0:
                tokens = torch.nn.functional.pad(tokens, (0, 0, 0, missing))
                mask = torch.nn.functional.pad(mask, (0, missing), value=False)
            tokens = tokens.to(like.tokens.dtype)
        return Conditioning(
            context=tokens.expand(batch_size, -1, -1), context_mask=mask.expand(batch_size, -1)
        )

    def extra_repr(self) -> str:
        return f"spec={self.spec}"


def build(text_embedder: Any) -> SdCrossAttention:
    if text_embedder is None or not callable(getattr(text_embedder, "embed", None)):
        import modiff

        raise modiff.SettingsError(
            ["the 'sd-cross-attention' conditioner needs a text embedder (its null is the empty prompt's embedding): "
             "configure [text_embedder], e.g. plugin = \"sd-clip\""]
        )
    return SdCrossAttention(text_embedder)
