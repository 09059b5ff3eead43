"""Skeleton of an encoder: lossless space-to-depth (pixel unshuffle)."""

from __future__ import annotations

from . import RoleTemplate

SETTINGS = r'''"""Settings of ``$name`` (pydantic only: ``modiff plugins`` imports this module)."""

from __future__ import annotations

from pydantic import Field

import modiff


class $settings_class(modiff.ComponentSettings):
    """The keys an ``[encoder]`` table with ``plugin = "$name"`` accepts."""

    downscale: int = Field(2, ge=1, description="Side of the pixel blocks folded into channels (f).")
    scaling_factor: float = Field(1.0, gt=0, description="Latents are multiplied by this after encoding.")
'''

COMPONENT = r'''"""Space-to-depth: each ``f x f`` block of pixels becomes ``3 f^2`` channels.

``encode`` is ``pixel_unshuffle`` and ``decode`` its exact inverse, so the
denoiser works at ``1/f`` of the resolution with nothing lost and nothing to
train: the cheapest way to make a pixel-space model smaller, and a baseline
for a learned autoencoder. It is not a ``torch.nn.Module`` because it has no
weights; modiff saves nothing for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

import modiff

from .settings import $settings_class


class SpaceToDepth:
    #: Nothing to learn: modiff skips the encoder training stage.
    needs_training = False

    def __init__(self, settings: $settings_class):
        self.downscale = settings.downscale
        self.latent_channels = 3 * settings.downscale**2
        self.scaling_factor = float(settings.scaling_factor)

    def encode(
        self, images: torch.Tensor, *, generator: torch.Generator | Sequence[torch.Generator] | None = None
    ) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3 f^2, H/f, W/f]`` (``generator`` is unused: nothing is sampled)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got a tensor of shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        f = self.downscale
        if h % f or w % f:
            raise ValueError(
                f"image size {h}x{w} is not a multiple of downscale f = {f}; choose sizes divisible by {f}"
            )
        z = F.pixel_unshuffle(images, f)
        return z * self.scaling_factor if self.scaling_factor != 1.0 else z

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"expected latents [B, {self.latent_channels}, h, w], got a tensor of shape {tuple(latents.shape)}"
            )
        z = latents / self.scaling_factor if self.scaling_factor != 1.0 else latents
        return F.pixel_shuffle(z, self.downscale)


def build_component(settings: $settings_class, context: modiff.BuildContext) -> SpaceToDepth:
    return SpaceToDepth(settings)
'''

TESTS = r'''

class $test_class($contract):
    plugin = "$name"
    settings: ClassVar[dict[str, Any]] = {"downscale": 2}
    exact = True  # decode(encode(x)) == x bit for bit

    def registry(self) -> modiff.Registry:
        return REGISTRY


class ${test_class}Scaled($test_class):
    settings: ClassVar[dict[str, Any]] = {"downscale": 4, "scaling_factor": 0.5}
    exact = False  # multiplying and dividing by the scale may round


def test_a_latent_holds_one_block_of_pixels() -> None:
    e = ${test_class}().build()
    images = torch.arange(3 * 4 * 4, dtype=torch.float32).view(1, 3, 4, 4)
    z = e.encode(images)
    assert z.shape == (1, 12, 2, 2)
    # the top-left latent position holds exactly the top-left 2x2 block of each channel
    assert sorted(z[0, :, 0, 0].tolist()) == sorted(images[0, :, :2, :2].flatten().tolist())
'''

TEMPLATE = RoleTemplate(
    role="encoder",
    hook="register_encoders",
    contract="EncoderContract",
    summary="lossless space-to-depth: f x f pixel blocks folded into channels",
    settings_class="SpaceToDepthSettings",
    settings=SETTINGS,
    component=COMPONENT,
    tests=TESTS,
    test_imports=("import torch",),
)
