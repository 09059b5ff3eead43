"""Layout pretraining: the words learn where things are before the denoiser starts.

Trained only through the denoising loss, the transformer's tokens stay a bag of
words for thousands of steps: in "a red square at the top left and a blue
circle at the bottom right" nothing forces the vector of "red" to say *top
left*, and the denoiser draws both places with swapped colours. The pretext
task gives that pressure directly and cheaply, from the same (image, caption)
pairs the denoiser trains on: predict the image, average-pooled to a coarse
``grid × grid`` colour map, from the caption's tokens through **one**
cross-attention layer whose queries are learned per grid cell.

One layer is the point. A cell's query can only copy values of the tokens its
key matches, so the tokens must carry *colour and shape together with place*
(the decoder has no layers of its own in which to do the binding). That is
exactly the structure the denoiser's cross-attention reads: its queries are
pixels, its keys and values the same tokens. The decoder is thrown away in
spirit after the stage (it stays in the state dict, untrained further).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modiff.protocols import TextEmbedding


class LayoutDecoder(nn.Module):
    """Text tokens -> a ``[B, 3, grid, grid]`` colour map, through one cross-attention layer."""

    def __init__(self, dim: int, grid: int, heads: int, seed: int):
        super().__init__()
        self.grid = grid
        g = torch.Generator().manual_seed(seed + 2)
        self.queries = nn.Parameter(0.5 * torch.randn(grid * grid, dim, generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 3)
            self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, 3))

    def forward(self, text: TextEmbedding) -> Tensor:
        b = text.tokens.shape[0]
        queries = self.queries[None].expand(b, -1, -1)
        read, _ = self.attention(
            queries, text.tokens, text.tokens, key_padding_mask=~text.mask, need_weights=False
        )
        colours = self.head(queries + read)  # [B, grid * grid, 3]
        return colours.transpose(1, 2).reshape(b, 3, self.grid, self.grid)


def layout_loss(decoder: LayoutDecoder, text: TextEmbedding, images: Tensor) -> Tensor:
    """Mean squared error between the decoded colour map and ``images`` ([-1, 1]) pooled to the grid."""
    target = F.adaptive_avg_pool2d(images.to(text.tokens), decoder.grid)
    return F.mse_loss(decoder(text), target)
