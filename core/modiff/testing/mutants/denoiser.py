"""Mutants of :class:`~modiff.testing.toys.ToyDenoiser`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...protocols import Conditioning
from ..toys import ToyDenoiser
from .base import mutant


def _masked_mean(c: Conditioning, use_mask: bool = True) -> torch.Tensor:
    assert c.context is not None
    m = c.context_mask if (use_mask and c.context_mask is not None) else torch.ones(
        c.context.shape[:2], dtype=torch.bool, device=c.context.device
    )
    m = m.to(c.context.dtype)[..., None]
    return (c.context * m).sum(1) / m.sum(1).clamp(min=1)


class _Parts(ToyDenoiser):
    """The toy's forward pass in parts, so that a mutant changes one of them."""

    def embedding(self, h: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        emb = self.time(t.to(h.dtype).view(-1, 1) / 1000.0)
        if self.vec is not None and c.vector is not None:
            emb = emb + self.vec(c.vector)
        if self.ctx is not None and c.context is not None:
            emb = emb + self.ctx(_masked_mean(c))
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        if c.concat is not None:
            x = torch.cat([x, c.concat], 1)
        h = self.conv_in(x)
        return self.conv_out(F.silu(h + self.embedding(h, t, c)[:, :, None, None]))


@mutant("denoiser", "wrong dtype", "test_dtype_follows_the_input")
class PredictsInFloat32(_Parts):
    """The prediction is cast with .float() at the end, whatever the input's dtype."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        return super().forward(x, t, c).float()


@mutant("denoiser", "ignores an input", "test_time_input")
class IgnoresTheTimestep(_Parts):
    """The time embedding is computed from a constant instead of t."""

    def embedding(self, h: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        return super().embedding(h, torch.zeros_like(t), c)


@mutant("denoiser", "ignores an input", "test_conditioning_is_used")
class IgnoresTheVector(_Parts):
    """conditioning.vector is never added to the embedding."""

    def embedding(self, h: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        return super().embedding(h, t, Conditioning(c.concat, c.context, c.context_mask, None))


@mutant("denoiser", "ignores an input", "test_conditioning_is_used")
class IgnoresTheConcatenatedChannels(_Parts):
    """conditioning.concat is replaced by zeros of the right shape."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        concat = None if c.concat is None else torch.zeros_like(c.concat)
        return super().forward(x, t, Conditioning(concat, c.context, c.context_mask, c.vector))


@mutant(
    "denoiser", "padding leaks", "test_masked_context_positions_do_not_matter", "test_padding_per_row_does_not_matter"
)
class AveragesPaddingIntoTheContext(_Parts):
    """The context is averaged over every position, padding included (context_mask ignored)."""

    def embedding(self, h: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        return super().embedding(h, t, Conditioning(c.concat, c.context, None, c.vector))


@mutant("denoiser", "leaks across the batch", "test_batch_independence")
class NormalisesOverTheBatch(_Parts):
    """Features are normalised with statistics of the whole batch (a BatchNorm-like mistake)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        if c.concat is not None:
            x = torch.cat([x, c.concat], 1)
        h = self.conv_in(x)
        h = (h - h.mean(dim=(0, 2, 3), keepdim=True)) / (h.std() + 1e-5)
        return self.conv_out(F.silu(h + self.embedding(h, t, c)[:, :, None, None]))


@mutant("denoiser", "wrong shape", "test_shapes_over_sizes")
class HalvesAndDoublesTheResolution(_Parts):
    """A pooling by 2 and an upsampling by 2 in the middle: odd sizes lose a row and a column."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        if c.concat is not None:
            x = torch.cat([x, c.concat], 1)
        h = self.conv_in(x)
        h = F.interpolate(F.avg_pool2d(h, 2, ceil_mode=False), scale_factor=2.0) if min(h.shape[-2:]) > 1 else h
        return self.conv_out(F.silu(h + self.embedding(h, t, c)[:, :, None, None]))


@mutant(
    "denoiser",
    "global random state",
    "test_deterministic",
    "test_inputs_are_left_unchanged_and_no_random_numbers_drawn",
)
class DropoutLeftOnInEval(_Parts):
    """F.dropout(h, 0.1) without training=self.training: dropout runs in evaluation too."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        if c.concat is not None:
            x = torch.cat([x, c.concat], 1)
        h = F.dropout(self.conv_in(x), 0.1)
        return self.conv_out(F.silu(h + self.embedding(h, t, c)[:, :, None, None]))


@mutant("denoiser", "state kept between calls", "test_conditioning_is_used")
class CachesTheContextProjection(_Parts):
    """The projected context is computed at the first call and reused for every later one."""

    def embedding(self, h: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        if self.ctx is None or c.context is None:
            return super().embedding(h, t, c)
        if getattr(self, "_cached", None) is None or self._cached.shape[0] != h.shape[0]:
            self._cached = self.ctx(_masked_mean(c))
        emb = self.time(t.to(h.dtype).view(-1, 1) / 1000.0) + self._cached
        if self.vec is not None and c.vector is not None:
            emb = emb + self.vec(c.vector)
        return emb


@mutant("denoiser", "modifies its input", "test_inputs_are_left_unchanged_and_no_random_numbers_drawn")
class ScalesItsInputInPlace(_Parts):
    """x_t is divided by its scale in place (x /= ...), changing the caller's tensor."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        x /= 1.5
        return super().forward(x, t, c) * 1.5


@mutant("denoiser", "wrong device", "test_output_follows_the_device")
class MakesTheMaskOnTheCpu(_Parts):
    """A mask of ones is made with torch.ones(shape) (no device=) and multiplied into the context."""

    def embedding(self, h: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        if c.context is not None:
            keep = torch.ones(c.context.shape, dtype=c.context.dtype)
            c = Conditioning(c.concat, c.context * keep, c.context_mask, c.vector)
        return super().embedding(h, t, c)


@mutant("denoiser", "wrong shape", "test_output_shape")
class PredictsTheConcatenatedChannelsToo(_Parts):
    """The output layer is sized for the input after concatenation: it predicts the image
    context's channels as well."""

    def __init__(self, s, ctx):  # type: ignore[no-untyped-def]
        super().__init__(s, ctx)
        cs = self.spec.conditioning
        self.conv_out = torch.nn.Conv2d(s.hidden, self.spec.in_channels + cs.concat_channels, 3, padding=1)
