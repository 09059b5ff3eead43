"""The UNet denoiser, written to be read from top to bottom.

A UNet sees the noisy input at several resolutions: on the way down each level
runs residual blocks (and, where configured, transformer blocks) and halves the
resolution; a middle block works at the coarsest resolution; on the way up each
level doubles the resolution and concatenates the activations saved on the way
down (the skip connections), so fine detail does not have to squeeze through
the bottleneck.

Three things steer every level:

* the timestep, as a sinusoidal embedding passed through a small MLP and added
  to the activations of every residual block (plus an optional conditioning
  vector, class-conditional style);
* the conditioner's context, which transformer blocks cross-attend to, with
  its padding mask;
* extra input channels (``Conditioning.concat``), concatenated to ``x_t``.

Parameter names and shapes follow diffusers' ``UNet2DConditionModel`` for the
Stable-Diffusion-shaped configuration (``conv_in``, ``time_embedding.linear_1``,
``down_blocks.0.resnets.0.norm1``, ``...attentions.0.transformer_blocks.0.attn2.to_k``,
``mid_block``, ``up_blocks``, ``conv_norm_out``, ``conv_out``; the conditioning
vector goes through ``class_embedding`` as diffusers' ``class_embed_type =
"projection"`` does), so a diffusers state dict loads with ``strict=True``.
The code is this project's own.

The segmentation head is the same backbone with a different output (one logit
per class and pixel) and no time input: it has no time embedding at all, and
its residual blocks have no ``time_emb_proj`` unless a conditioning vector
gives them something to add.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import modiff
from modiff.protocols import Conditioning, DenoiserSpec

from .config import UNetSettings

RESNET_EPS = 1e-5  # GroupNorm/LayerNorm epsilon of residual and transformer blocks (SD's value)
TRANSFORMER_GROUPNORM_EPS = 1e-6  # the GroupNorm in front of a transformer block (SD's value)


# --------------------------------------------------------------------------
# The timestep embedding
# --------------------------------------------------------------------------


class SinusoidalEmbedding(nn.Module):
    """``t`` -> ``[cos(t * f_i), sin(t * f_i)]`` over geometrically spaced frequencies.

    The network cannot do much with a raw scalar ``t``; sines and cosines of
    many frequencies give it a smooth, bounded code in which nearby timesteps
    look alike and distant ones do not (the Transformer's position encoding).
    The frequencies are ``10000 ** (-i / half)``, cosine half first, as in
    Stable Diffusion (``flip_sin_to_cos = True``, ``freq_shift = 0``).
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        self.dim = dim
        half = dim // 2
        exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32) / half
        # Derived from `dim` alone, so not part of the state dict.
        self.register_buffer("freqs", torch.exp(exponent), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        args = t.float()[:, None] * self.freqs.float()[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.dim % 2:
            emb = F.pad(emb, (0, 1))
        return emb


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear: the learned part of the time (or vector) embedding."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


# --------------------------------------------------------------------------
# Residual block
# --------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, add the embedding, GroupNorm -> SiLU -> dropout -> conv, plus the input.

    The embedding (time, plus the conditioning vector) enters as a per-channel
    bias after the first convolution: every block at every level learns how
    the noise level should shift its features.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int | None, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=RESNET_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(emb_dim, out_channels) if emb_dim is not None else None
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=RESNET_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # A 1x1 convolution matches the channels of the residual path when they change.
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        """``emb`` is the embedding after SiLU (computed once per UNet call, not per block)."""
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None and emb is not None:
            h = h + self.time_emb_proj(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


# --------------------------------------------------------------------------
# Attention and the transformer block
# --------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention of ``x`` over itself or over a context, through SDPA.

    Query, key and value projections have no bias. That is SD's layout, and it
    also means an all-zero context position yields a zero key and value, which
    is what lets a row whose context is entirely padding attend to nothing
    (see :meth:`UNet.prepare_context`).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, dropout: float):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``x`` ``[B, N, dim]``; ``context`` ``[B, L, context_dim]`` (self-attention when None);
        ``mask`` broadcastable to ``[B, heads, N, L]``: boolean (True where attending is allowed)
        or additive (0 or -inf)."""
        b, n, _ = x.shape
        source = x if context is None else context
        q = self.to_q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.to_k(source).view(b, -1, self.heads, self.head_dim).transpose(1, 2)
        v = self.to_v(source).view(b, -1, self.heads, self.head_dim).transpose(1, 2)
        if mask is not None and mask.dtype != q.dtype and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)  # under autocast the projections may run in a lower precision
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    """A gated linear unit with a GELU gate: ``a * gelu(b)`` where ``[a, b] = proj(x)``."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to four times the width, dropout, back to the width."""

    def __init__(self, dim: int, dropout: float, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention over the context, and a GEGLU feed-forward,
    each added back to its input.

    Without a context width the block only self-attends (no ``norm2``/``attn2``).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=RESNET_EPS)
        self.attn1 = Attention(dim, heads, head_dim, None, dropout)
        if context_dim is not None:
            self.norm2 = nn.LayerNorm(dim, eps=RESNET_EPS)
            self.attn2 = Attention(dim, heads, head_dim, context_dim, dropout)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = nn.LayerNorm(dim, eps=RESNET_EPS)
        self.ff = FeedForward(dim, dropout)

    def forward(self, x: Tensor, context: Tensor | None, mask: Tensor | None) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None:
            x = self.attn2(self.norm2(x), context, mask) + x  # type: ignore[misc]
        return self.ff(self.norm3(x)) + x


#: Frequencies (times pi) of the position features: 1, 2, 4, 8 cycles over the grid.
POSITION_FREQUENCIES = 4


def position_features(height: int, width: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[height * width, 4 * POSITION_FREQUENCIES]``: sines and cosines of each pixel's
    coordinates (pixel centres, scaled to [-1, 1]), row-major like the tokens.

    They depend on where a pixel is relative to the grid, not on the grid's size
    in pixels, so one learned map serves every resolution a UNet is run at.
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    freq = math.pi * 2.0 ** torch.arange(POSITION_FREQUENCIES, device=device, dtype=torch.float32)
    angles = torch.cat([grid_y.reshape(-1, 1) * freq, grid_x.reshape(-1, 1) * freq], dim=1)
    return torch.cat([angles.sin(), angles.cos()], dim=1).to(dtype)


class Transformer2D(nn.Module):
    """Feature maps -> tokens -> transformer blocks -> feature maps, plus the input.

    ``proj_in``/``proj_out`` are 1x1 convolutions (SD 1.x) or linear layers
    (SD 2.x): the same map with differently shaped weights, kept so that either
    checkpoint layout loads. With channels-last inputs the flattening is a
    view, not a copy.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        head_dim: int,
        depth: int,
        context_dim: int | None,
        groups: int,
        linear: bool,
        dropout: float,
        positions: bool = False,
    ):
        super().__init__()
        inner = heads * head_dim
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_GROUPNORM_EPS)
        self.proj_in: nn.Module = nn.Linear(channels, inner) if linear else nn.Conv2d(channels, inner, 1)
        # Starts at zero: with positions on, the block begins as the plain one and learns to use them.
        self.pos_proj: nn.Linear | None = None
        if positions:
            self.pos_proj = nn.Linear(4 * POSITION_FREQUENCIES, inner, bias=False)
            nn.init.zeros_(self.pos_proj.weight)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, head_dim, context_dim, dropout) for _ in range(depth)
        )
        self.proj_out: nn.Module = nn.Linear(inner, channels) if linear else nn.Conv2d(inner, channels, 1)

    def forward(self, x: Tensor, context: Tensor | None, mask: Tensor | None) -> Tensor:
        b, c, height, width = x.shape
        # A 1x1 convolution is a matrix product over the channels of each pixel; applying
        # it as one to the flattened tokens is the same map and measurably faster on CPUs.
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, height * width, c)
        tokens = F.linear(tokens, _matrix(self.proj_in), self.proj_in.bias)
        if self.pos_proj is not None:
            tokens = tokens + self.pos_proj(position_features(height, width, device=x.device, dtype=tokens.dtype))
        for block in self.transformer_blocks:
            tokens = block(tokens, context, mask)
        tokens = F.linear(tokens, _matrix(self.proj_out), self.proj_out.bias)
        # Back to feature maps in the input's memory layout: a free view for channels-last
        # inputs, one copy otherwise (mixing layouts would make every later op reorder).
        # (One name for the intermediate results, so each is freed as soon as it is replaced.)
        h = tokens.view(b, height, width, c).permute(0, 3, 1, 2).contiguous(memory_format=_memory_format(x))
        del tokens
        return h + x


def _matrix(layer: nn.Module) -> Tensor:
    """The ``[out, in]`` weight matrix of a linear layer or a 1x1 convolution."""
    return layer.weight if isinstance(layer, nn.Linear) else layer.weight.flatten(1)


def _memory_format(x: Tensor) -> torch.memory_format:
    """``channels_last`` when ``x`` is laid out that way (and not also plainly contiguous)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


# --------------------------------------------------------------------------
# Changing resolution
# --------------------------------------------------------------------------


class Downsample(nn.Module):
    """A stride-2 3x3 convolution: half the resolution (rounded up), same channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the matching skip's size, then a 3x3 convolution.

    Upsampling to the skip's size (twice the input for even sizes) is what
    lets sizes that are not multiples of the total stride work.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


# --------------------------------------------------------------------------
# One resolution level, down and up, and the middle
# --------------------------------------------------------------------------


def _run(enabled: bool, fn: Callable[..., Tensor], *args: Any) -> Tensor:
    """``fn(*args)``, recomputed in the backward pass when gradient checkpointing is on."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class Level(nn.Module):
    """What down, middle and up blocks share: the gradient checkpointing switch.

    The blocks' loops rebind one name, ``h``, at every step, so each
    intermediate result is freed as soon as the next one exists.
    """

    gradient_checkpointing: bool = False


class DownBlock(Level):
    """``layers`` residual(+transformer) layers, each output saved as a skip, then a downsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layers: int,
        emb_dim: int | None,
        attention: dict[str, Any] | None,
        downsample: bool,
        groups: int,
        dropout: float,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, emb_dim, groups, dropout)
            for i in range(layers)
        )
        self.attentions = (
            nn.ModuleList(Transformer2D(out_channels, **attention) for _ in range(layers)) if attention else None
        )
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if downsample else None

    def forward(
        self, h: Tensor, emb: Tensor | None, context: Tensor | None, mask: Tensor | None, skips: list[Tensor]
    ) -> Tensor:
        for i, resnet in enumerate(self.resnets):
            h = _run(self.gradient_checkpointing, resnet, h, emb)
            if self.attentions is not None:
                h = _run(self.gradient_checkpointing, self.attentions[i], h, context, mask)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h


class MidBlock(Level):
    """At the coarsest resolution: residual block, transformer, residual block.

    Without attention the middle is a single residual block, which is the
    layout diffusers gives ``UNet2DConditionModel`` with ``mid_block_type =
    "UNetMidBlock2D"``; keeping it lets such weights load too.
    """

    def __init__(
        self, channels: int, emb_dim: int | None, attention: dict[str, Any] | None, groups: int, dropout: float
    ):
        super().__init__()
        count = 2 if attention else 1
        self.resnets = nn.ModuleList(ResnetBlock(channels, channels, emb_dim, groups, dropout) for _ in range(count))
        self.attentions = nn.ModuleList([Transformer2D(channels, **attention)]) if attention else None

    def forward(self, h: Tensor, emb: Tensor | None, context: Tensor | None, mask: Tensor | None) -> Tensor:
        h = _run(self.gradient_checkpointing, self.resnets[0], h, emb)
        if self.attentions is not None:
            h = _run(self.gradient_checkpointing, self.attentions[0], h, context, mask)
            h = _run(self.gradient_checkpointing, self.resnets[1], h, emb)
        return h


class UpBlock(Level):
    """``layers`` residual(+transformer) layers, each first concatenating one skip, then an upsampler.

    Layer ``i`` consumes the skips in reverse order of saving; the last one is
    the skip from before the matching down level, hence its different width.
    """

    def __init__(
        self,
        in_channels: int,
        prev_channels: int,
        out_channels: int,
        layers: int,
        emb_dim: int | None,
        attention: dict[str, Any] | None,
        upsample: bool,
        groups: int,
        dropout: float,
    ):
        super().__init__()
        resnets = []
        for i in range(layers):
            skip_channels = in_channels if i == layers - 1 else out_channels
            h_channels = prev_channels if i == 0 else out_channels
            resnets.append(ResnetBlock(h_channels + skip_channels, out_channels, emb_dim, groups, dropout))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = (
            nn.ModuleList(Transformer2D(out_channels, **attention) for _ in range(layers)) if attention else None
        )
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if upsample else None

    def forward(
        self, h: Tensor, emb: Tensor | None, context: Tensor | None, mask: Tensor | None, skips: list[Tensor]
    ) -> Tensor:
        for i, resnet in enumerate(self.resnets):
            h = torch.cat([h, skips.pop()], dim=1)
            h = _run(self.gradient_checkpointing, resnet, h, emb)
            if self.attentions is not None:
                h = _run(self.gradient_checkpointing, self.attentions[i], h, context, mask)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, skips[-1].shape[-2:])
        return h


# --------------------------------------------------------------------------
# The UNet
# --------------------------------------------------------------------------


def _heads_per_level(settings: UNetSettings) -> list[tuple[int, int]]:
    """``(heads, head_dim)`` for every level, from ``heads`` or ``head_dim``."""
    out = []
    heads, head_dims = settings.per_level("heads"), settings.per_level("head_dim")
    for level, (channels, h, d) in enumerate(zip(settings.channels, heads, head_dims, strict=True)):
        if h is None and d is None:  # default: heads of about 32 channels that divide the width
            h = max(1, channels // 32)
            while channels % h:
                h -= 1
        elif h is None:
            assert d is not None
            if channels % d:
                raise ValueError(
                    f"head_dim = {d} does not divide the {channels} channels of level {level}; "
                    f"choose a head_dim dividing every level's channels, or set heads instead"
                )
            h = channels // d
        if channels % h:
            raise ValueError(
                f"heads = {h} does not divide the {channels} channels of level {level}; "
                f"choose a number of heads dividing every level's channels"
            )
        out.append((h, channels // h))
    return out


class UNet(nn.Module):
    """The denoiser: ``unet(x_t, t, conditioning) -> prediction``.

    Args:
        settings: the shape (channels per level, attention levels, ...).
        spec: what the assembly said about the input and the conditioning.
        head: ``"denoise"`` (a prediction with ``spec.out_channels``) or
            ``"segment"`` (``num_classes`` logits per pixel, no time input).
        num_classes: classes of the segmentation head.
        cross_attention_dim: width of the context; ``None`` for none.
    """

    def __init__(
        self,
        settings: UNetSettings,
        spec: DenoiserSpec,
        *,
        head: str = "denoise",
        num_classes: int = 0,
        cross_attention_dim: int | None = None,
    ):
        super().__init__()
        if head not in ("denoise", "segment"):
            raise ValueError(f'head must be "denoise" or "segment", got {head!r}')
        if head == "segment" and num_classes < 1:
            raise ValueError(
                "the segmentation head needs num_classes >= 1: set the denoiser's num_classes, "
                "or use a dataset with segmentation masks"
            )
        self.spec = spec
        self.head = head
        self.num_classes = num_classes if head == "segment" else 0
        self.cross_attention_dim = cross_attention_dim
        cond = spec.conditioning
        channels = list(settings.channels)
        levels = len(channels)
        attention_levels = set(range(levels) if settings.attention_levels is None else settings.attention_levels)
        heads = _heads_per_level(settings)
        depth = settings.per_level("transformer_depth")
        blocks = [int(n or 1) for n in settings.per_level("layers_per_block")]
        groups, dropout = settings.norm_num_groups, settings.dropout

        def attention(level: int) -> dict[str, Any]:
            h, d = heads[level]
            return dict(
                heads=h,
                head_dim=d,
                depth=depth[level],
                context_dim=cross_attention_dim,
                groups=groups,
                linear=settings.use_linear_projection,
                dropout=dropout,
                positions=settings.attention_positions,
            )

        # Time (denoising head only) and conditioning vector, summed into one embedding.
        emb_dim = channels[0] * 4
        if head == "denoise":
            self.time_proj: nn.Module | None = SinusoidalEmbedding(channels[0])
            self.time_embedding: nn.Module | None = TimestepEmbedding(channels[0], emb_dim)
        else:
            self.time_proj = self.time_embedding = None
        self.class_embedding = TimestepEmbedding(cond.vector_dim, emb_dim) if cond.vector_dim else None
        block_emb_dim = emb_dim if (self.time_embedding is not None or self.class_embedding is not None) else None

        self.conv_in = nn.Conv2d(spec.in_channels + cond.concat_channels, channels[0], 3, padding=1)

        self.down_blocks = nn.ModuleList()
        previous = channels[0]
        for level, width in enumerate(channels):
            self.down_blocks.append(
                DownBlock(
                    previous,
                    width,
                    blocks[level],
                    block_emb_dim,
                    attention(level) if level in attention_levels else None,
                    downsample=level < levels - 1,
                    groups=groups,
                    dropout=dropout,
                )
            )
            previous = width

        self.mid_block = MidBlock(
            channels[-1], block_emb_dim, attention(levels - 1) if settings.mid_attention else None, groups, dropout
        )

        self.up_blocks = nn.ModuleList()
        previous = channels[-1]
        for _, level in enumerate(reversed(range(levels))):
            below = channels[max(level - 1, 0)]  # width of the skip saved before this level's down block
            self.up_blocks.append(
                UpBlock(
                    below,
                    previous,
                    channels[level],
                    blocks[level] + 1,
                    block_emb_dim,
                    attention(level) if level in attention_levels else None,
                    upsample=level > 0,
                    groups=groups,
                    dropout=dropout,
                )
            )
            previous = channels[level]

        out_channels = spec.out_channels if head == "denoise" else num_classes
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=RESNET_EPS)
        self.conv_out = nn.Conv2d(channels[0], out_channels, 3, padding=1)

        self.has_cross_attention = cross_attention_dim is not None and (
            bool(attention_levels) or settings.mid_attention
        )
        self.set_gradient_checkpointing(settings.gradient_checkpointing)

    # -- switches ----------------------------------------------------------

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass (less memory, ~30 % more time)."""
        self.gradient_checkpointing = enabled
        for module in self.modules():
            if isinstance(module, Level):
                module.gradient_checkpointing = enabled

    # -- inputs ------------------------------------------------------------

    def prepare_context(
        self, conditioning: Conditioning, batch: int, dtype: torch.dtype
    ) -> tuple[Tensor | None, Tensor | None]:
        """The context and the additive SDPA mask every cross-attention layer uses, made once per call.

        Padding positions are zeroed, so nothing under the mask (not even an
        ``inf``) can reach the output. A row whose mask has no real position
        may attend to all of its (zero) positions; with bias-free key and
        value projections that gives a zero attention output, i.e. "no
        context", instead of the NaN of a softmax over nothing.
        """
        if not self.has_cross_attention:
            return None, None
        context = conditioning.context
        if context is None:
            raise ValueError(
                "this UNet cross-attends to a context but conditioning.context is None; use a conditioner "
                "that gives one (e.g. cross-attention), or build the UNet for a conditioner without context"
            )
        if context.dim() != 3 or context.shape[0] != batch or context.shape[-1] != self.cross_attention_dim:
            raise ValueError(
                f"conditioning.context has shape {tuple(context.shape)}; expected [{batch}, L, "
                f"{self.cross_attention_dim}] (batch, tokens, cross_attention_dim)"
            )
        context = context.to(dtype)
        mask = conditioning.context_mask
        if mask is None:
            return context, None
        if mask.shape != context.shape[:2]:
            raise ValueError(f"context_mask has shape {tuple(mask.shape)}; expected {tuple(context.shape[:2])}")
        mask = mask.to(torch.bool)
        if context.device.type == "cpu" and not torch.compiler.is_compiling() and bool(mask.all()):
            # Nothing to hide, and SDPA is faster without a mask. (Not checked on GPUs:
            # reading the answer would wait for the device and stall the launch queue;
            # nor under torch.compile, where reading it would break the graph in two.)
            return context, None
        context = context.masked_fill(~mask[..., None], 0.0)
        keep = mask | ~mask.any(dim=1, keepdim=True)
        # An additive mask made once per call is faster in SDPA than a boolean one.
        bias = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, float("-inf"))
        return context, bias[:, None, None, :]

    def embedding(self, t: Tensor | None, conditioning: Conditioning, batch: int, dtype: torch.dtype) -> Tensor | None:
        """The time embedding plus the conditioning vector's, or None when there is neither."""
        emb = None
        if self.time_embedding is not None:
            if t is None:
                raise ValueError("the denoising head needs timesteps t, got None")
            t = torch.as_tensor(t, device=self.conv_in.weight.device)
            if t.dim() == 0 or t.numel() == 1:
                t = t.reshape(1).expand(batch)
            if t.shape != (batch,):
                raise ValueError(f"t has shape {tuple(t.shape)}; expected [{batch}] (one timestep per sample)")
            emb = self.time_embedding(self.time_proj(t).to(dtype))  # type: ignore[misc]
        if self.class_embedding is not None:
            vector = conditioning.vector
            vector_dim = self.spec.conditioning.vector_dim
            if vector is None or vector.shape != (batch, vector_dim):
                got = None if vector is None else tuple(vector.shape)
                raise ValueError(f"conditioning.vector is {got}; this UNet expects [{batch}, {vector_dim}]")
            vec = self.class_embedding(vector.to(dtype))
            emb = vec if emb is None else emb + vec
        return emb

    def input(self, x_t: Tensor, conditioning: Conditioning) -> Tensor:
        """``x_t`` with the conditioning's extra channels concatenated."""
        spec = self.spec
        if x_t.dim() != 4 or x_t.shape[1] != spec.in_channels:
            raise ValueError(
                f"x_t has shape {tuple(x_t.shape)}; expected [B, {spec.in_channels}, h, w] "
                f"(in_channels = {spec.in_channels})"
            )
        extra = spec.conditioning.concat_channels
        concat = conditioning.concat
        if extra == 0:
            if concat is not None:
                raise ValueError(
                    f"conditioning.concat has {concat.shape[1]} channels but this UNet was built for none; "
                    "build it with the conditioner's spec (concat_channels)"
                )
            return x_t
        expected = (x_t.shape[0], extra, *x_t.shape[2:])
        if concat is None or tuple(concat.shape) != expected:
            got = None if concat is None else tuple(concat.shape)
            raise ValueError(f"conditioning.concat is {got}; this UNet expects {expected} (concat_channels = {extra})")
        return torch.cat([x_t, concat.to(x_t.dtype)], dim=1)

    # -- the network -------------------------------------------------------

    def forward(self, x_t: Tensor, t: Tensor | None, conditioning: Conditioning | None = None) -> Tensor:
        """``[B, C, h, w]`` noisy input, ``[B]`` timesteps (ignored by the segmentation head),
        conditioning -> ``[B, C_out, h, w]`` (``C_out`` = out_channels or num_classes)."""
        conditioning = conditioning if conditioning is not None else Conditioning()
        batch, dtype = x_t.shape[0], x_t.dtype
        x = self.input(x_t, conditioning)
        emb = self.embedding(t, conditioning, batch, dtype)
        emb = F.silu(emb) if emb is not None else None  # every residual block applies SiLU first; do it once
        context, mask = self.prepare_context(conditioning, batch, dtype)

        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h = block(h, emb, context, mask, skips)
        h = self.mid_block(h, emb, context, mask)
        for block in self.up_blocks:
            h = block(h, emb, context, mask, skips)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


def build(settings: UNetSettings, context: modiff.BuildContext) -> UNet:
    """Resolve the settings against the run (head, classes, context width) and build the UNet."""
    spec: DenoiserSpec | None = getattr(context, "denoiser_spec", None)
    if spec is None:
        raise ValueError("the UNet needs context.denoiser_spec (the assembly sets it before building the denoiser)")
    head = settings.head
    if head == "auto":
        head = spec.head
    num_classes = settings.num_classes if settings.num_classes is not None else spec.num_classes
    given, from_spec = settings.cross_attention_dim, spec.conditioning.context_dim
    if given is not None and from_spec is not None and given != from_spec:
        raise ValueError(
            f"cross_attention_dim = {given} but the conditioner gives a context of width {from_spec}; "
            "remove cross_attention_dim from the denoiser settings (it defaults to the conditioner's) or change "
            "the conditioner's context_dim"
        )
    unet = UNet(
        settings,
        spec,
        head=head,
        num_classes=num_classes,
        cross_attention_dim=given if given is not None else from_spec,
    )
    if settings.init_from is not None:
        from .init_from import init_from

        unet.init_report = init_from(unet, settings.init_from)
    return unet
