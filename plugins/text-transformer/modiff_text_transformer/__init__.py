"""A small bidirectional transformer over words, trained with the denoiser.

Registers the text embedder ``transformer``: the text encoder of the
latent-diffusion paper's text-to-image model, scaled down. Its vocabulary is
fitted on the dataset's captions (one word per token) and its weights are
trained jointly with the denoiser on the denoising loss, so each word's vector
is shaped by what the image needs: a colour word can learn which object and
place it belongs to. torch is imported inside the factory only, so listing
plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .settings import TextTransformerSettings

__all__ = ["TextTransformerSettings", "build_transformer", "register_text_embedders"]


def build_transformer(settings: TextTransformerSettings, context: modiff.BuildContext) -> Any:
    """A word-level bidirectional transformer, fitted on the captions and trained with the denoiser."""
    from .embedder import LayoutPretrainedTransformer, TextTransformer

    return LayoutPretrainedTransformer(settings) if settings.pretext == "layout" else TextTransformer(settings)


@modiff.hookimpl
def register_text_embedders(register: modiff.Register) -> None:
    register("transformer", build_transformer, TextTransformerSettings)
