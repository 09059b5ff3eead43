"""Skeleton of a denoiser: a small residual convolutional network."""

from __future__ import annotations

from . import RoleTemplate

SETTINGS = r'''"""Settings of ``$name`` (pydantic only: ``modiff plugins`` imports this module)."""

from __future__ import annotations

from pydantic import Field, model_validator

import modiff


class $settings_class(modiff.ComponentSettings):
    """The keys a ``[denoiser]`` table with ``plugin = "$name"`` accepts."""

    width: int = Field(64, ge=1, description="Channels of every residual block.")
    blocks: int = Field(2, ge=1, description="Number of residual blocks.")
    groups: int = Field(8, ge=1, description="GroupNorm groups; must divide width.")
    attention: bool = Field(True, description="Cross-attend to the text context when the conditioner gives one.")

    @model_validator(mode="after")
    def _groups_divide_width(self) -> $settings_class:
        if self.width % self.groups:
            raise ValueError(f"groups = {self.groups} must divide width = {self.width}; choose e.g. groups = 1")
        return self
'''

COMPONENT = r'''"""A small residual convolutional denoiser.

It keeps the resolution of its input (no down-sampling), so any input size
works. The timestep enters as a sinusoidal embedding added to every block,
together with ``conditioning.vector`` when the conditioner gives one;
``conditioning.concat`` is concatenated to the input channels; and with
``attention`` every block cross-attends to ``conditioning.context``,
ignoring positions where ``context_mask`` is False.

What the network is shaped for comes from ``context.denoiser_spec``, which
modiff derives from the encoder and the conditioner: swap either in the
settings file and this network reshapes itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import modiff
from modiff.protocols import Conditioning, DenoiserSpec

from .settings import $settings_class


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of float timesteps ``[B]`` -> ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    angles = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(emb, (0, dim - emb.shape[1]))


class CrossAttention(nn.Module):
    """Pixels attend to the context; masked positions get no weight."""

    def __init__(self, width: int, context_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_dim, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, c, hh, ww = h.shape
        q = self.q(self.norm(h).flatten(2).transpose(1, 2))  # [B, HW, C]
        k, v = self.kv(context).chunk(2, dim=-1)  # [B, L, C] each
        scores = q @ k.transpose(1, 2) / math.sqrt(c)  # [B, HW, L]
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if mask is not None:  # a row with no real token attends to nothing (not NaN)
            weights = torch.where(mask.any(1)[:, None, None], weights, torch.zeros_like(weights))
        out = self.out(weights @ v)
        return h + out.transpose(1, 2).reshape(b, c, hh, ww)


class ResidualBlock(nn.Module):
    def __init__(self, width: int, groups: int, context_dim: int | None):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.emb = nn.Linear(width, width)
        self.norm2 = nn.GroupNorm(groups, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.attention = CrossAttention(width, context_dim, groups) if context_dim else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor, c: Conditioning) -> torch.Tensor:
        x = self.conv1(F.silu(self.norm1(h))) + self.emb(emb)[:, :, None, None]
        h = h + self.conv2(F.silu(self.norm2(x)))
        if self.attention is not None and c.context is not None:
            h = self.attention(h, c.context, c.context_mask)
        return h


class ConvDenoiser(nn.Module):
    """``(x_t, t, conditioning) -> prediction`` with the input's channels."""

    def __init__(self, settings: $settings_class, spec: DenoiserSpec):
        super().__init__()
        self.spec = spec
        cs = spec.conditioning
        w = settings.width
        self.conv_in = nn.Conv2d(spec.in_channels + cs.concat_channels, w, 3, padding=1)
        self.time = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.vector = nn.Linear(cs.vector_dim, w) if cs.vector_dim else None
        context_dim = cs.context_dim if settings.attention else None
        self.blocks = nn.ModuleList(ResidualBlock(w, settings.groups, context_dim) for _ in range(settings.blocks))
        self.norm_out = nn.GroupNorm(settings.groups, w)
        self.conv_out = nn.Conv2d(w, spec.out_channels, 3, padding=1)
        self.width = w

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        c = conditioning
        expected = self.spec.conditioning.concat_channels
        if expected:
            if c.concat is None or c.concat.shape[1] != expected:
                got = None if c.concat is None else c.concat.shape[1]
                raise ValueError(f"this denoiser was built for {expected} concatenated channels, got {got}")
            x_t = torch.cat([x_t, c.concat.to(x_t)], dim=1)
        emb = self.time(timestep_embedding(t, self.width).to(x_t))
        if self.vector is not None and c.vector is not None:
            emb = emb + self.vector(c.vector.to(x_t))
        h = self.conv_in(x_t)
        for block in self.blocks:
            h = block(h, emb, c)
        return self.conv_out(F.silu(self.norm_out(h)))


def build_component(settings: $settings_class, context: modiff.BuildContext) -> ConvDenoiser:
    spec = context.denoiser_spec
    if spec is None:
        raise modiff.ModiffError("$name needs context.denoiser_spec; build it through modiff.build")
    if spec.head != "denoise":
        raise modiff.ModiffError(
            "the denoiser $name has no segmentation head; use [run] task = \"text-to-image\" "
            "or a denoiser with one (e.g. unet)"
        )
    return ConvDenoiser(settings, spec)
'''

TESTS = r'''

class $test_class($contract):
    plugin = "$name"
    #: Small settings keep the contract fast. Test another configuration by
    #: subclassing this class with other settings or another ``spec`` (each
    #: subclass runs the whole contract again).
    settings: ClassVar[dict[str, Any]] = {"width": 16, "blocks": 1, "groups": 4}
    #: What the conditioner gives this denoiser: 2 concatenated channels,
    #: a context of width 12 and a vector of width 6.
    spec = modiff.DenoiserSpec(
        in_channels=4, out_channels=4, sample_size=8, conditioning=modiff.ConditioningSpec(2, 12, 6)
    )
    size_multiple = 4  # image sizes the shape tests try are multiples of this

    def registry(self) -> modiff.Registry:
        return REGISTRY


def test_groups_must_divide_width() -> None:
    with pytest.raises(ValueError, match="groups = 3 must divide width = 16"):
        $package.$settings_class(width=16, groups=3)


def test_zero_concat_is_refused_when_channels_are_expected() -> None:
    d = ${test_class}().build()
    x, t, c = ${test_class}().inputs(1, 8)
    with pytest.raises(ValueError, match="2 concatenated channels"):
        d(x, t, modiff.Conditioning(None, c.context, c.context_mask, c.vector))
'''

TEMPLATE = RoleTemplate(
    role="denoiser",
    hook="register_denoisers",
    contract="DenoiserContract",
    summary="a small residual convolutional denoiser with cross-attention to the text",
    settings_class="ConvDenoiserSettings",
    settings=SETTINGS,
    component=COMPONENT,
    tests=TESTS,
    test_imports=("import pytest",),
)
