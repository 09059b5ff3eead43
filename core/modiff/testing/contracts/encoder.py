"""Contract for :class:`modiff.protocols.Encoder`."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ...protocols import Encoder
from .base import CONTRACT_SETTINGS, Contract


class EncoderContract(Contract):
    """Every encoder: latent shapes, round-trip shapes, batch independence, size errors."""

    role: ClassVar[str] = "encoder"
    image_size: ClassVar[int] = 16

    def images(self, batch: int, size: int | None = None, seed: int = 0) -> torch.Tensor:
        size = size or self.image_size
        g = torch.Generator().manual_seed(seed)
        return torch.rand(batch, 3, size, size, generator=g) * 2 - 1

    def test_is_an_encoder(self) -> None:
        e = self.build()
        assert isinstance(e, Encoder)
        assert e.downscale >= 1 and e.latent_channels >= 1 and e.scaling_factor > 0

    @CONTRACT_SETTINGS
    @given(batch=st.integers(1, 3), k=st.integers(1, 3))
    def test_latent_shape(self, batch: int, k: int) -> None:
        e = self.build()
        size = e.downscale * k * (2 if e.downscale == 1 else 1)
        with torch.no_grad():
            z = e.encode(self.images(batch, size))
            assert z.shape == (batch, e.latent_channels, size // e.downscale, size // e.downscale)
            assert e.decode(z).shape == (batch, 3, size, size)

    def test_batch_independence(self) -> None:
        e = self.build()
        x = self.images(3)
        with torch.no_grad():
            full = e.encode(x)
            y = x.clone()
            y[1:] = self.images(2, seed=9)
            part = e.encode(y)
            torch.testing.assert_close(full[0], part[0], rtol=1e-5, atol=self.atol)
            torch.testing.assert_close(e.decode(full)[0], e.decode(part)[0], rtol=1e-5, atol=self.atol)

    def test_size_not_multiple_of_downscale_is_a_clear_error(self) -> None:
        e = self.build()
        if e.downscale == 1:
            pytest.skip("every size is a multiple of 1")
        bad = e.downscale * 2 + 1
        with pytest.raises(ValueError, match=str(bad)):
            e.encode(self.images(1, bad))
