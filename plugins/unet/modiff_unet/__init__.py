"""A UNet denoiser for modiff with denoising and segmentation heads.

Registers the denoiser ``unet``. torch is imported inside the factory, so
listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .config import UNetSettings

__all__ = ["UNetSettings", "build_unet"]


def build_unet(settings: UNetSettings, context: modiff.BuildContext) -> Any:
    """UNet with GroupNorm residual blocks and cross-attention transformers (SD 1.x layout)."""
    from .unet import build

    return build(settings, context)


@modiff.hookimpl
def register_denoisers(register: modiff.Register) -> None:
    register("unet", build_unet, UNetSettings)
