"""Token rows to the ``[B, L]`` tensors every text embedder hands its model.

Each embedder tokenizes its own way (words, BPE) and truncates its own way
(CLIP keeps its end token), but they all pad the same: to the longest row of
the batch, not to ``max_tokens``, so cross-attention over short captions stays
cheap, with a mask that is True at real tokens. One function, so the three
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import TruncationWarning

if TYPE_CHECKING:
    import torch


def truncate_token_rows(
    rows: Sequence[Sequence[int]], max_tokens: int, *, what: str = "tokens", stacklevel: int = 3
) -> list[list[int]]:
    """``rows`` cut to ``max_tokens``, with one :class:`modiff.TruncationWarning` for the batch
    naming how many prompts were cut and how long the longest was (``what`` names the unit, e.g.
    ``"tokens (the start token included)"``). An embedder that must keep an end token cuts its
    own way and warns with the same category."""
    too_long = [len(r) for r in rows if len(r) > max_tokens]
    if too_long:
        import warnings

        warnings.warn(
            f"{len(too_long)} prompt(s) have up to {max(too_long)} {what}; only the first "
            f"max_tokens = {max_tokens} are used",
            TruncationWarning,
            stacklevel=stacklevel,
        )
    return [list(r[:max_tokens]) for r in rows]


def pad_token_rows(
    rows: Sequence[Sequence[int]], pad: int, *, device: Any = None, min_length: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [B, L] int64, mask [B, L] bool)`` with ``L`` the longest row (at least ``min_length``);
    ``ids`` is ``pad`` and ``mask`` False past each row's end."""
    import torch  # here, not at the top: `import modiff` must not import torch (listing plugins stays fast)

    length = max([min_length, *(len(r) for r in rows)])
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = True
    return ids.to(device), mask.to(device)
