"""modiff-dit: a Diffusion Transformer denoiser, ``[denoiser] plugin = "dit"``.

Written only against modiff's public API, the way any third-party plugin
would be. torch is imported inside the factory, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .settings import DiTSettings

__version__ = "0.1.0"


def build(settings: DiTSettings, context: modiff.BuildContext) -> Any:
    """Diffusion Transformer: patches, adaLN-Zero blocks, cross-attention to the text."""
    from .model import build_dit

    return build_dit(settings, context)


@modiff.hookimpl
def register_denoisers(register: modiff.Register) -> None:
    register("dit", build, DiTSettings)


__all__ = ["DiTSettings", "build", "register_denoisers"]
