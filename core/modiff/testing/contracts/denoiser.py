"""Contract for :class:`modiff.protocols.Denoiser`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from hypothesis import given
from hypothesis import strategies as st

from ...protocols import Conditioning, ConditioningSpec, DenoiserSpec
from .base import CONTRACT_SETTINGS, Contract


class DenoiserContract(Contract):
    """Every denoiser: output shape, batch independence, masked context, determinism.

    Set ``spec`` to the :class:`DenoiserSpec` to build for, and
    ``size_multiple`` to the factor image sizes must be divisible by.
    """

    role: ClassVar[str] = "denoiser"
    spec: ClassVar[DenoiserSpec] = DenoiserSpec(
        in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(0, 16, None)
    )
    size_multiple: ClassVar[int] = 4
    #: Channels the prediction has: ``out_channels`` for denoising, classes for segmentation.
    def out_channels(self) -> int:
        return self.spec.out_channels

    def context(self) -> Any:
        from ...assembly import BuildContext

        return BuildContext(denoiser_spec=self.spec)

    def inputs(self, batch: int, size: int, length: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, Conditioning]:
        g = torch.Generator().manual_seed(seed)
        spec = self.spec
        x = torch.randn(batch, spec.in_channels, size, size, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g).float()
        cs = spec.conditioning
        concat = torch.randn(batch, cs.concat_channels, size, size, generator=g) if cs.concat_channels else None
        context = mask = None
        if cs.context_dim is not None:
            context = torch.randn(batch, length, cs.context_dim, generator=g)
            mask = torch.ones(batch, length, dtype=torch.bool)
        vector = torch.randn(batch, cs.vector_dim, generator=g) if cs.vector_dim is not None else None
        return x, t, Conditioning(concat, context, mask, vector)

    def test_output_shape(self) -> None:
        d = self.build()
        x, t, c = self.inputs(2, self.spec.sample_size)
        with torch.no_grad():
            out = d(x, t, c)
        assert out.shape == (2, self.out_channels(), self.spec.sample_size, self.spec.sample_size)
        assert bool(torch.isfinite(out).all())

    @CONTRACT_SETTINGS
    @given(batch=st.integers(1, 3), k=st.integers(1, 3), length=st.integers(1, 6))
    def test_shapes_over_sizes(self, batch: int, k: int, length: int) -> None:
        d = self.shared()
        size = self.size_multiple * k
        x, t, c = self.inputs(batch, size, length)
        with torch.no_grad():
            out = d(x, t, c)
        assert out.shape == (batch, self.out_channels(), size, size)

    def test_batch_independence(self) -> None:
        d = self.build()
        x, t, c = self.inputs(3, self.spec.sample_size, seed=1)
        x2, t2, c2 = self.inputs(3, self.spec.sample_size, seed=2)
        mixed_x = torch.cat([x[:1], x2[1:]])
        mixed_t = torch.cat([t[:1], t2[1:]])
        mixed_c = Conditioning.cat([c.index(slice(0, 1)), c2.index(slice(1, 3))])
        with torch.no_grad():
            a, b = d(x, t, c), d(mixed_x, mixed_t, mixed_c)
        torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-5)

    def test_masked_context_positions_do_not_matter(self) -> None:
        if self.spec.conditioning.context_dim is None:
            return
        d = self.build()
        x, t, c = self.inputs(2, self.spec.sample_size, length=6, seed=3)
        mask = c.context_mask.clone()  # type: ignore[union-attr]
        mask[:, 4:] = False
        ctx = c.context.clone()  # type: ignore[union-attr]
        junk = ctx.clone()
        junk[:, 4:] = 50.0
        with torch.no_grad():
            a = d(x, t, Conditioning(c.concat, ctx, mask, c.vector))
            b = d(x, t, Conditioning(c.concat, junk, mask, c.vector))
            short = d(x, t, Conditioning(c.concat, ctx[:, :4], mask[:, :4], c.vector))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a, short, rtol=1e-4, atol=1e-5)

    def test_deterministic(self) -> None:
        d1, d2 = self.build(), self.build()
        x, t, c = self.inputs(2, self.spec.sample_size, seed=4)
        with torch.no_grad():
            torch.testing.assert_close(d1(x, t, c), d2(x, t, c), rtol=0, atol=0)
