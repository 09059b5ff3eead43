"""Contract for :class:`modiff.protocols.TextEmbedder`."""

from __future__ import annotations

from typing import ClassVar

import torch
from hypothesis import given

from ...protocols import TextEmbedder, TextEmbedding
from ..strategies import prompt_batches
from .base import CONTRACT_SETTINGS, Contract


class TextEmbedderContract(Contract):
    """Every text embedder: shapes, mask, padding invariance, determinism, any prompt."""

    role: ClassVar[str] = "text_embedder"
    prompts: ClassVar[list[str]] = ["a red circle", "a large blue square at the bottom left", ""]

    def embed(self, e: TextEmbedder, prompts: list[str]) -> TextEmbedding:
        with torch.no_grad():
            return e.embed(prompts)

    def test_is_a_text_embedder(self) -> None:
        e = self.build()
        assert isinstance(e, TextEmbedder)
        assert e.dim > 0 and e.max_tokens > 0

    def test_shapes_and_mask(self) -> None:
        e = self.build()
        out = self.embed(e, self.prompts)
        b = len(self.prompts)
        assert out.tokens.dim() == 3 and out.tokens.shape[0] == b and out.tokens.shape[2] == e.dim
        assert out.tokens.shape[1] <= e.max_tokens
        assert out.mask.shape == out.tokens.shape[:2] and out.mask.dtype == torch.bool
        assert out.pooled.shape == (b, e.dim)
        assert bool(torch.isfinite(out.tokens).all()) and bool(torch.isfinite(out.pooled).all())
        lengths = out.mask.sum(1)
        assert int(lengths[1]) > int(lengths[0]), "a longer prompt must have more real tokens"

    def test_padding_and_batch_invariance(self) -> None:
        e = self.build()
        alone = self.embed(e, [self.prompts[0]])
        batched = self.embed(e, self.prompts)
        n = int(alone.mask[0].sum())
        assert int(batched.mask[0].sum()) == n
        real = alone.mask[0]
        torch.testing.assert_close(batched.tokens[0][: real.shape[0]][real], alone.tokens[0][real], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(batched.pooled[0], alone.pooled[0], rtol=1e-4, atol=1e-4)

    def test_deterministic(self) -> None:
        e = self.build()
        a, b = self.embed(e, self.prompts), self.embed(e, self.prompts)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled) and torch.equal(a.mask, b.mask)

    @CONTRACT_SETTINGS
    @given(prompts=prompt_batches())
    def test_any_prompt(self, prompts: list[str]) -> None:
        e = self.shared()
        out = self.embed(e, prompts)
        assert out.tokens.shape[0] == len(prompts) and out.tokens.shape[1] <= e.max_tokens
        assert bool(torch.isfinite(out.pooled).all())
