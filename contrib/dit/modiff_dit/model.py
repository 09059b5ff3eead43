"""The Diffusion Transformer (Peebles & Xie, 2023), conditioned on text.

::

    x_t [B, C, H, W]  (+ conditioning.concat channels)
      -> patchify: a convolution with kernel = stride = p -> tokens [B, N, D], N = (H/p)(W/p)
      -> + 2D position embeddings (fixed sinusoids, or learned)
      -> depth x DiT block:
           self-attention, adaLN-Zero        (shift, scale and gate from c)
           cross-attention to the context    (masked; when the conditioner gives a context)
           MLP, adaLN-Zero
      -> final layer: adaptive LayerNorm (shift, scale from c), linear to p * p * C_out
      -> unpatchify -> [B, C_out, H, W]

``c = MLP(sinusoids(t)) + Linear(conditioning.vector)``: the conditioner's
vector takes the place of DiT's class embedding. "Zero": every modulation
layer, the cross-attention output and the final projection start at zero,
so each block starts as the identity and the network as the zero function;
training grows them (this is what made DiT train stably). Cross-attention
follows PixArt-alpha: a LayerNorm'd query from the patch tokens, keys and
values from the projected context, between self-attention and the MLP.

The segmentation head (``head = "segment"``) outputs per-pixel class logits
and takes no time input at all: ``c`` is then the vector alone (or zero).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import modiff
from modiff.protocols import Conditioning, DenoiserSpec

from .settings import DiTSettings


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features ``[B, dim]`` of float timesteps ``[B]`` (cosines then sines)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(features, (0, dim - 2 * half))


def sincos_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2D position embeddings ``[h * w, dim]`` (row-major), ``dim`` a multiple of 4:
    a quarter of the features are sines of the row, a quarter cosines of the row,
    and the same for the column, at geometrically spaced frequencies."""
    quarter = dim // 4
    omega = 1.0 / 10_000.0 ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    y = ys.reshape(-1, 1) * omega[None, :]
    x = xs.reshape(-1, 1) * omega[None, :]
    return torch.cat([torch.sin(y), torch.cos(y), torch.sin(x), torch.cos(x)], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    """Patch tokens attend to the (projected) context; masked positions get no weight."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        length = context.shape[1]
        dh = d // self.heads
        q = self.q(self.norm(x)).view(b, n, self.heads, dh).transpose(1, 2)
        k, v = self.kv(context).view(b, length, 2, self.heads, dh).permute(2, 0, 3, 1, 4)
        attn_mask = real = None
        if mask is not None:
            mask = mask.to(device=x.device, dtype=torch.bool)
            real = mask.any(1)  # a row with no real position attends to nothing (output zero, not NaN)
            attn_mask = (mask | ~real[:, None])[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        y = self.out(y.transpose(1, 2).reshape(b, n, d))
        return y if real is None else y * real[:, None, None].to(y.dtype)


class DiTBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, cross_attention: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.cross = CrossAttention(width, heads) if cross_attention else None
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = max(1, int(round(width * mlp_ratio)))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        #: adaLN-Zero: shift, scale and gate for the attention and for the MLP, from c.
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None, :].chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        if self.cross is not None and context is not None:
            x = x + self.cross(x, context, mask)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c)[:, None, :].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """``(x_t, t, conditioning) -> prediction`` (or class logits with the segmentation head)."""

    def __init__(self, settings: DiTSettings, spec: DenoiserSpec, *, segment: bool = False, num_classes: int = 0):
        super().__init__()
        self.spec = spec
        self.segment = segment
        cs = spec.conditioning
        p, w = settings.patch_size, settings.width
        self.patch_size = p
        self.width = w
        self.frequency_dim = settings.frequency_dim
        self.out_channels = num_classes if segment else spec.out_channels
        self.patchify = nn.Conv2d(spec.in_channels + cs.concat_channels, w, kernel_size=p, stride=p)
        self.time = (
            None
            if segment
            else nn.Sequential(nn.Linear(settings.frequency_dim, w), nn.SiLU(), nn.Linear(w, w))
        )
        self.vector = nn.Linear(cs.vector_dim, w) if cs.vector_dim else None
        self.context = nn.Linear(cs.context_dim, w) if cs.context_dim else None
        self.grid = max(1, spec.sample_size // p)
        self.pos = (
            nn.Parameter(sincos_2d(self.grid, self.grid, w).view(1, self.grid * self.grid, w).clone())
            if settings.pos_embed == "learned"
            else None
        )
        self.blocks = nn.ModuleList(
            DiTBlock(w, settings.heads, settings.mlp_ratio, cross_attention=cs.context_dim is not None)
            for _ in range(settings.depth)
        )
        self.final = FinalLayer(w, p * p * self.out_channels)
        self._initialise()

    def _initialise(self) -> None:
        """DiT's initialisation: Xavier for linear layers and the patch projection,
        small normal for the time MLP, zeros for every adaLN-Zero path."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patchify.weight.view(self.patchify.weight.shape[0], -1))
        nn.init.zeros_(self.patchify.bias)
        if self.time is not None:
            for layer in (self.time[0], self.time[2]):
                nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.modulation[1].weight)
            nn.init.zeros_(block.modulation[1].bias)
            if block.cross is not None:
                nn.init.zeros_(block.cross.out.weight)
                nn.init.zeros_(block.cross.out.bias)
        for layer in (self.final.modulation[1], self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def position(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """Position embeddings ``[1, h * w, D]`` for a grid of ``h x w`` patches."""
        if self.pos is None:
            return sincos_2d(h, w, self.width, device=like.device).to(like.dtype)[None]
        if (h, w) == (self.grid, self.grid):
            return self.pos.to(like.dtype)
        grid = self.pos.view(1, self.grid, self.grid, self.width).permute(0, 3, 1, 2)
        resized = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        return resized.permute(0, 2, 3, 1).reshape(1, h * w, self.width).to(like.dtype)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, conditioning: Conditioning) -> torch.Tensor:
        c = conditioning
        b, _, height, width = x_t.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of patch_size = {p}; "
                f"use sizes divisible by {p} or a smaller [denoiser] patch_size"
            )
        expected = self.spec.conditioning.concat_channels
        if expected:
            if c.concat is None or c.concat.shape[1] != expected:
                got = None if c.concat is None else int(c.concat.shape[1])
                raise ValueError(f"this denoiser was built for {expected} concatenated channels, got {got}")
            x_t = torch.cat([x_t, c.concat.to(x_t)], dim=1)
        h, w = height // p, width // p
        x = self.patchify(x_t).flatten(2).transpose(1, 2)  # [B, N, D]
        x = x + self.position(h, w, x)
        cond = x.new_zeros(b, self.width)
        if self.time is not None:
            cond = cond + self.time(timestep_features(t.to(x.device), self.frequency_dim).to(x.dtype))
        if self.vector is not None and c.vector is not None:
            cond = cond + self.vector(c.vector.to(x))
        context = self.context(c.context.to(x)) if self.context is not None and c.context is not None else None
        for block in self.blocks:
            x = block(x, cond, context, c.context_mask)
        x = self.final(x, cond)  # [B, N, p * p * C]
        x = x.view(b, h, w, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, self.out_channels, height, width)


def build_dit(settings: DiTSettings, context: modiff.BuildContext) -> DiT:
    spec = context.denoiser_spec
    if spec is None:
        raise modiff.ModiffError("the dit denoiser needs context.denoiser_spec; build it through modiff.build")
    p = settings.patch_size
    if spec.sample_size % p:
        divisors = [d for d in range(1, spec.sample_size + 1) if spec.sample_size % d == 0 and d <= 8]
        raise modiff.ModiffError(
            f"[denoiser] patch_size = {p} does not divide the latent size {spec.sample_size} "
            f"(image size / encoder downscale); choose one of {divisors}"
        )
    segment = settings.head == "segment" or (settings.head == "auto" and spec.head == "segment")
    num_classes = settings.num_classes or spec.num_classes
    if segment and num_classes < 2:
        raise modiff.ModiffError(
            "the dit segmentation head needs at least 2 classes: set [denoiser] num_classes, "
            "or use a dataset with masks"
        )
    return DiT(settings, spec, segment=segment, num_classes=num_classes)
