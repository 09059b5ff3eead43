"""Caches of frozen components' outputs in the denoiser stage.

A frozen text embedder gives a caption the same vectors in any batch, and a
frozen deterministic encoder gives an image the same latent, so each is
computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..protocols import TextEmbedding


class TextCache:
    """Embeddings of a frozen text embedder, cached per caption.

    Captions repeat (the shapes world has a few thousand distinct ones), and a
    frozen embedder gives a caption the same vectors in any batch (the
    padding-invariance contract), so each caption is embedded once.
    """

    def __init__(self, embedder: Any):
        self.embedder = embedder
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def __call__(self, captions: Sequence[str]) -> TextEmbedding:
        todo = sorted({c for c in captions if c not in self.cache})
        if todo:
            out = self.embedder.embed(todo)
            for i, c in enumerate(todo):
                self.cache[c] = (out.tokens[i][out.mask[i]].clone(), out.pooled[i].clone())
        rows = [self.cache[c] for c in captions]
        length = max(1, max(int(r[0].shape[0]) for r in rows))
        first = rows[0][0]
        tokens = first.new_zeros(len(rows), length, first.shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=first.device)
        for i, (tok, _) in enumerate(rows):
            tokens[i, : tok.shape[0]] = tok
            mask[i, : tok.shape[0]] = True
        return TextEmbedding(tokens, mask, torch.stack([r[1] for r in rows]))


class LatentCache:
    """Latents of a frozen, deterministic encoder, cached per dataset index."""

    def __init__(self, encoder: Any, enabled: bool):
        self.encoder = encoder
        self.enabled = enabled
        self.cache: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        if not self.enabled:
            return self.encoder.encode(images)
        missing = [j for j, i in enumerate(indices) if i not in self.cache]
        if missing:
            z = self.encoder.encode(images[missing])
            for j, zj in zip(missing, z):
                self.cache[indices[j]] = zj
        return torch.stack([self.cache[i] for i in indices])
