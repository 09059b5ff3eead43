"""Stable Diffusion 1.x weights through modiff's own components.

Adds two commands and the two components that make SD's text conditioning
exact:

* ``modiff import-sd SOURCE RUN``: a diffusers folder or an original
  single-file checkpoint becomes an ordinary run directory (``unet``,
  ``kl-autoencoder``, ``sd-clip``, ``sd-cross-attention``, a sampler with SD's
  schedule) that ``generate``, ``evaluate`` and ``ablate`` use like any other;
* ``modiff export-diffusers RUN DIR``: such a run as a diffusers folder;
* text embedder ``sd-clip`` and conditioner ``sd-cross-attention``: CLIP
  padded to 77 tokens without a mask, and the empty prompt as the null, as
  SD's UNet was trained with.

torch and transformers are imported inside the factories and commands, so
listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .settings import SdClipSettings, SdCrossAttentionSettings

__all__ = ["SdClipSettings", "SdCrossAttentionSettings"]


def build_sd_clip(settings: SdClipSettings, context: modiff.BuildContext) -> Any:
    """CLIP text encoder as Stable Diffusion uses it: padded to max_tokens, no mask, every position real."""
    from .text import SdClipEmbedder

    return SdClipEmbedder.from_folder(
        settings.pretrained, max_tokens=settings.max_tokens, skip_layers=settings.skip_layers
    )


def build_sd_cross_attention(settings: SdCrossAttentionSettings, context: modiff.BuildContext) -> Any:
    """Text states as the cross-attention context, unchanged; the empty prompt's embedding as the null (SD)."""
    from .conditioner import build

    return build(getattr(context, "text_embedder", None))


@modiff.hookimpl
def register_text_embedders(register: modiff.Register) -> None:
    register("sd-clip", build_sd_clip, SdClipSettings)


@modiff.hookimpl
def register_conditioners(register: modiff.Register) -> None:
    register("sd-cross-attention", build_sd_cross_attention, SdCrossAttentionSettings)


@modiff.hookimpl
def register_commands(cli: Any) -> None:
    from .cli import add_commands

    add_commands(cli)
