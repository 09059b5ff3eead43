"""Conditioners for modiff: cross-attention, concatenation, vector, hybrid, none.

Each registered name builds the same :class:`~modiff_conditioners.conditioner.PartsConditioner`
with a different choice of parts. torch is imported inside the factories, so
listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .config import ConcatSettings, CrossAttentionSettings, HybridSettings, NoneSettings, TextSettings, VectorSettings

__all__ = [
    "ConcatSettings",
    "CrossAttentionSettings",
    "HybridSettings",
    "NoneSettings",
    "VectorSettings",
]


def _text_dim(context: modiff.BuildContext, name: str) -> int:
    embedder = getattr(context, "text_embedder", None)
    if embedder is None:
        raise modiff.SettingsError(
            [
                f"the {name!r} conditioner needs a text embedder: configure [text_embedder], "
                "or use conditioner 'none' for an unconditional model"
            ]
        )
    return int(embedder.dim)


def _latent_size(context: modiff.BuildContext) -> int | None:
    try:
        return int(context.latent_size)
    except modiff.ModiffError:  # no dataset and no [run] image_size: only matters for concatenated channels
        return None


def _text_conditioner(settings: TextSettings, context: modiff.BuildContext, text_dim: int, **parts: Any) -> Any:
    """The :class:`PartsConditioner` every text conditioner builds: the text
    width, the latent size, the null conditioning and the image context are
    the same for all of them; ``parts`` picks the parts that use the text."""
    from .conditioner import PartsConditioner

    return PartsConditioner(
        text_dim=text_dim,
        latent_size=_latent_size(context),
        **parts,
        null=settings.null,
        image_context_channels=settings.image_channels(context),
    )


def build_cross_attention(settings: CrossAttentionSettings, context: modiff.BuildContext) -> Any:
    """Token embeddings -> linear -> context the denoiser cross-attends to, with the padding mask."""
    text_dim = _text_dim(context, "cross-attention")
    return _text_conditioner(
        settings,
        context,
        text_dim,
        context_dim=settings.context_dim or text_dim,
        project_context=settings.projection,
        vector_dim=text_dim if settings.vector else None,
    )


def build_concat(settings: ConcatSettings, context: modiff.BuildContext) -> Any:
    """Pooled text -> linear -> constant feature maps concatenated to the denoiser's input."""
    return _text_conditioner(settings, context, _text_dim(context, "concat"), maps=settings.channels)


def build_vector(settings: VectorSettings, context: modiff.BuildContext) -> Any:
    """Pooled text -> linear -> a vector added to the denoiser's time embedding."""
    text_dim = _text_dim(context, "vector")
    return _text_conditioner(settings, context, text_dim, vector_dim=settings.vector_dim or text_dim)


def build_hybrid(settings: HybridSettings, context: modiff.BuildContext) -> Any:
    """Concatenated feature maps and cross-attention context together."""
    text_dim = _text_dim(context, "hybrid")
    return _text_conditioner(
        settings,
        context,
        text_dim,
        maps=settings.channels,
        context_dim=settings.context_dim or text_dim,
        project_context=settings.projection,
        vector_dim=text_dim if settings.vector else None,
    )


def build_none(settings: NoneSettings, context: modiff.BuildContext) -> Any:
    """Unconditional: no text; optionally an image context as extra channels."""
    from .conditioner import PartsConditioner

    return PartsConditioner(
        text_dim=None,
        latent_size=_latent_size(context),
        image_context_channels=settings.image_channels(context),
    )


@modiff.hookimpl
def register_conditioners(register: modiff.Register) -> None:
    register("cross-attention", build_cross_attention, CrossAttentionSettings)
    register("concat", build_concat, ConcatSettings)
    register("vector", build_vector, VectorSettings)
    register("hybrid", build_hybrid, HybridSettings)
    register("none", build_none, NoneSettings)
