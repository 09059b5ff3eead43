"""Contract for :class:`modiff.protocols.Conditioner`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from hypothesis import given
from hypothesis import strategies as st

from ...protocols import Conditioner, Conditioning, TextEmbedding
from .base import CONTRACT_SETTINGS, Contract


class FakeTextEmbedder:
    """A text embedder stand-in of a given width, for building conditioners alone."""

    def __init__(self, dim: int = 16, max_tokens: int = 8):
        self.dim = dim
        self.max_tokens = max_tokens


def fake_embedding(batch: int, length: int, dim: int, seed: int = 0, lengths: list[int] | None = None) -> TextEmbedding:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, dim, generator=g)
    lengths = lengths or [max(1, length - i % length) for i in range(batch)]
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return TextEmbedding(tokens, mask, pooled)


class ConditionerContract(Contract):
    """Every conditioner: output fits its spec, null conditioning, padding and batch invariance."""

    role: ClassVar[str] = "conditioner"
    text_dim: ClassVar[int] = 16
    latent_size: ClassVar[int] = 8
    latent_channels: ClassVar[int] = 4
    #: Whether the conditioner uses the text at all (``none`` does not).
    uses_text: ClassVar[bool] = True

    def context(self) -> Any:
        from ...assembly import BuildContext
        from ...settings import RunSettings

        return BuildContext(
            run=RunSettings(image_size=self.latent_size),
            text_embedder=FakeTextEmbedder(self.text_dim),  # type: ignore[arg-type]
        )

    def check_fits_spec(self, c: Conditioner, out: Conditioning, batch: int) -> None:
        spec = c.spec
        if spec.concat_channels:
            assert out.concat is not None and out.concat.shape == (batch, spec.concat_channels, self.latent_size, self.latent_size)
        else:
            assert out.concat is None
        if spec.context_dim is not None:
            assert out.context is not None and out.context.shape[0] == batch and out.context.shape[2] == spec.context_dim
            if out.context_mask is not None:
                assert out.context_mask.shape == out.context.shape[:2] and out.context_mask.dtype == torch.bool
        else:
            assert out.context is None
        if spec.vector_dim is not None:
            assert out.vector is not None and out.vector.shape == (batch, spec.vector_dim)
        else:
            assert out.vector is None

    def test_is_a_conditioner(self) -> None:
        assert isinstance(self.build(), Conditioner)

    @CONTRACT_SETTINGS
    @given(batch=st.integers(1, 4), length=st.integers(1, 8))
    def test_output_and_null_fit_the_spec(self, batch: int, length: int) -> None:
        c = self.shared()
        with torch.no_grad():
            out = c.condition(fake_embedding(batch, length, self.text_dim))
            self.check_fits_spec(c, out, batch)
            self.check_fits_spec(c, c.null(batch), batch)

    def test_padding_does_not_matter(self) -> None:
        c = self.build()
        emb = fake_embedding(2, 6, self.text_dim, lengths=[3, 6])
        noisy = emb.tokens.clone()
        noisy[0, 3:] = 100.0  # junk under the mask
        other = TextEmbedding(noisy, emb.mask, emb.pooled)
        with torch.no_grad():
            a, b = c.condition(emb), c.condition(other)
        for name in ("concat", "vector"):
            if getattr(a, name) is not None:
                torch.testing.assert_close(getattr(a, name), getattr(b, name))
        if a.context is not None:
            m = a.context_mask if a.context_mask is not None else torch.ones(a.context.shape[:2], dtype=torch.bool)
            torch.testing.assert_close(a.context[m], b.context[m])

    def test_batch_independence(self) -> None:
        c = self.build()
        emb = fake_embedding(3, 5, self.text_dim, seed=1)
        changed = fake_embedding(3, 5, self.text_dim, seed=2)
        mixed = TextEmbedding(
            torch.cat([emb.tokens[:1], changed.tokens[1:]]),
            torch.cat([emb.mask[:1], changed.mask[1:]]),
            torch.cat([emb.pooled[:1], changed.pooled[1:]]),
        )
        with torch.no_grad():
            a, b = c.condition(emb), c.condition(mixed)
        for name in ("concat", "context", "vector"):
            if getattr(a, name) is not None:
                torch.testing.assert_close(getattr(a, name)[0], getattr(b, name)[0])

    def test_text_changes_the_output(self) -> None:
        if not self.uses_text:
            return
        c = self.build()
        with torch.no_grad():
            a = c.condition(fake_embedding(1, 4, self.text_dim, seed=1))
            b = c.condition(fake_embedding(1, 4, self.text_dim, seed=2))
        differs = [
            not torch.equal(getattr(a, n), getattr(b, n)) for n in ("concat", "context", "vector") if getattr(a, n) is not None
        ]
        assert any(differs), "different prompts gave identical conditioning"
