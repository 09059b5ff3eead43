"""Outputs of frozen components, computed once per example in the denoiser stage.

A frozen deterministic encoder gives an image the same latent and a frozen
text embedder gives a caption the same vectors, so each is computed once.
*How* they are computed matters as much: the make-up of a batch changes the
last bits of a matrix product, so an example's latent or embedding must not
depend on which examples happened to be needed before it, or a resumed run
would drift from an uninterrupted one. Here examples are taken in fixed
chunks of consecutive dataset indices, the whole chunk at once the first time
any of its examples is needed; the batch an example is computed in is then a
function of its index alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..protocols import TextEmbedding

#: Dataset indices per chunk: large enough to batch well, small enough not to
#: compute much that a short run never uses.
CHUNK = 32


class FrozenCache:
    """Latents and text embeddings of frozen components, per dataset index.

    ``encoder`` is ``None`` when latents cannot be cached (the encoder trains
    or samples its posterior); ``embedder`` is ``None`` when the text
    embedder trains with the denoiser (it embeds every step instead).
    """

    def __init__(self, dataset: Any, *, encoder: Any = None, embedder: Any = None, chunk: int = CHUNK):
        self.dataset = dataset
        self.encoder = encoder
        self.embedder = embedder
        self.chunk = chunk
        self._latents: dict[int, torch.Tensor] = {}
        self._text: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def _fill(self, indices: Sequence[int], have: dict[int, Any], device: torch.device) -> None:
        for first in sorted({i - i % self.chunk for i in indices if i not in have}):
            members = list(range(first, min(first + self.chunk, len(self.dataset))))
            examples = [self.dataset[i] for i in members]
            if self.encoder is not None:
                images = torch.stack([e.image for e in examples]).to(device)
                for i, z in zip(members, self.encoder.encode(images)):
                    self._latents[i] = z
            if self.embedder is not None:
                captions = sorted({e.caption for e in examples})
                out = self.embedder.embed(captions)
                rows = {c: (out.tokens[k][out.mask[k]].clone(), out.pooled[k].clone()) for k, c in enumerate(captions)}
                for i, e in zip(members, examples):
                    self._text[i] = rows[e.caption]

    def latents(self, images: torch.Tensor, indices: Sequence[int], step: Any = None) -> torch.Tensor:
        """The latents of the examples at ``indices`` (``images`` are those examples)."""
        if self.encoder is None:
            raise RuntimeError("this cache holds no latents")
        self._fill(indices, self._latents, images.device)
        return torch.stack([self._latents[i] for i in indices]).to(images.dtype)

    def text(self, captions: Sequence[str], indices: Sequence[int]) -> TextEmbedding:
        """The text embedding of the examples at ``indices``, padded to the longest."""
        if self.embedder is None:
            raise RuntimeError("this cache holds no text embeddings")
        device = next((p.device for p in getattr(self.embedder, "parameters", lambda: iter(()))()), torch.device("cpu"))
        self._fill(indices, self._text, device)
        rows = [self._text[i] for i in indices]
        length = max(1, max(int(r[0].shape[0]) for r in rows))
        first = rows[0][0]
        tokens = first.new_zeros(len(rows), length, first.shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=first.device)
        for i, (tok, _) in enumerate(rows):
            tokens[i, : tok.shape[0]] = tok
            mask[i, : tok.shape[0]] = True
        return TextEmbedding(tokens, mask, torch.stack([r[1] for r in rows]))
