"""Encoders for modiff: pixel space (``identity``) and a trainable KL
autoencoder (``kl-autoencoder``, the Stable Diffusion VAE architecture).

Heavy imports (torch) happen inside the factories, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .config import KLAutoencoderSettings


def build_identity(settings: modiff.NoSettings, context: modiff.BuildContext) -> Any:
    """Pixel space: images are their own latents (downscale 1, 3 channels, exact)."""
    from .identity import PixelSpace

    return PixelSpace()


def build_kl_autoencoder(settings: KLAutoencoderSettings, context: modiff.BuildContext) -> Any:
    """The Stable Diffusion VAE architecture, trained in its own stage; per-channel latent normalisation."""
    from .kl import KLAutoencoder

    return KLAutoencoder(settings)


@modiff.hookimpl
def register_encoders(register: modiff.Register) -> None:
    register("identity", build_identity, modiff.NoSettings)
    register("kl-autoencoder", build_kl_autoencoder, KLAutoencoderSettings)
