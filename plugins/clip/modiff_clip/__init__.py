"""CLIP text embeddings for modiff: trained offline or loaded from a local folder.

Registers the text embedder ``clip``. transformers takes seconds to import, so
it is imported inside the factory only; listing plugins stays fast.

For other plugins that use a CLIP text encoder (modiff-sd's ``sd-clip``), the
public API is two modules, imported where needed: :mod:`modiff_clip.hf`
(loading folders, tokenizers, the one text-model loader) and
:mod:`modiff_clip.encoding` (tokenising, truncation, hidden states, checks).
"""

from __future__ import annotations

from typing import Any

import modiff

from .settings import ClipSettings

__all__ = ["ClipSettings", "build_clip", "register_text_embedders"]

#: Vision tower size when neither the dataset nor [run] image_size gives one.
FALLBACK_IMAGE_SIZE = 32


def _image_size(context: modiff.BuildContext) -> int:
    try:
        return int(context.image_size)
    except (modiff.ModiffError, AttributeError):
        return FALLBACK_IMAGE_SIZE


def build_clip(settings: ClipSettings, context: modiff.BuildContext) -> Any:
    """CLIP text encoder: a local Hugging Face folder, or a small CLIP trained contrastively on the dataset."""
    from .embedder import ClipTextEmbedder

    saved = getattr(context, "assets", {}).get("text_embedder")
    if saved is not None and settings.pretrained is None:
        # Restoring a trained run: its tokenizer and shape are saved; read no caption, train no tokenizer.
        return ClipTextEmbedder.from_saved(settings, saved)
    dataset = getattr(context, "dataset", None)
    captions = [] if settings.pretrained is not None or dataset is None else list(dataset.captions())
    size = FALLBACK_IMAGE_SIZE if settings.pretrained is not None else _image_size(context)
    return ClipTextEmbedder.from_settings(settings, captions, size)


@modiff.hookimpl
def register_text_embedders(register: modiff.Register) -> None:
    register("clip", build_clip, ClipSettings)
