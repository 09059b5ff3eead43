"""Prompts through a CLIP text tower: what every CLIP-based text embedder does alike.

Public API of modiff-clip, with :mod:`modiff_clip.hf`. modiff's ``clip`` and
modiff-sd's ``sd-clip`` differ only in how they pad a batch (to its longest
prompt with a mask, or to ``max_tokens`` with every position real, as Stable
Diffusion does) and whether they pass the mask to the encoder. Checking a
tokenizer and encoder belong together, tokenising with truncation that keeps
the end token, and reading the (skip-layer) hidden states live here once, so
the two cannot drift apart.

Imports torch; transformers is never imported here (the models are passed in).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch import Tensor

import modiff

from .hf import quiet

__all__ = ["check_text_tower", "hidden_states", "pad_id", "token_rows"]


def check_text_tower(config: Any, tokenizer: Any, *, max_tokens: int | None, skip_layers: int) -> None:
    """Refuse a ``max_tokens`` past the encoder's positions, a ``skip_layers``
    that leaves no layer, and a tokenizer with more tokens than the encoder has
    embeddings (``ValueError`` for the settings, :class:`modiff.WeightsError`
    for a mismatched pair). ``max_tokens = None`` means the tokenizer's own."""
    positions = int(config.max_position_embeddings)
    layers = int(config.num_hidden_layers)
    if max_tokens is not None and max_tokens > positions:
        raise ValueError(
            f"max_tokens = {max_tokens} exceeds the {positions} positions of this CLIP text encoder; "
            f"set max_tokens to at most {positions}"
        )
    if skip_layers >= layers:
        raise ValueError(
            f"skip_layers = {skip_layers} leaves no layer of the {layers}-layer text encoder; use 0 to {layers - 1}"
        )
    if len(tokenizer) > int(config.vocab_size):
        raise modiff.WeightsError(
            f"the tokenizer has {len(tokenizer)} tokens but the text encoder only {config.vocab_size} "
            "embeddings: they do not belong together"
        )


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad token, or its end token where it has none (CLIP pads with it)."""
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


def token_rows(tokenizer: Any, prompts: Sequence[str], max_tokens: int, *, stacklevel: int = 4) -> list[list[int]]:
    """Each prompt's token ids, start and end tokens included, unpadded.

    A prompt longer than ``max_tokens`` keeps its first ``max_tokens - 1``
    tokens and the end token (what CLIP's own truncation does: the pooled
    output is read at the end token), with one :class:`modiff.TruncationWarning`
    for the batch (so not :func:`modiff.truncate_token_rows`, which keeps the
    first ``max_tokens``). The default ``stacklevel`` points at the caller of
    an embedder's ``embed`` that calls its ``tokenize`` that calls this.
    """
    if isinstance(prompts, str):
        raise TypeError("embed takes a sequence of prompts; wrap a single prompt in a list")
    with quiet():
        rows = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    too_long = [len(r) for r in rows if len(r) > max_tokens]
    if not too_long:
        return [list(r) for r in rows]
    warnings.warn(
        f"{len(too_long)} prompt(s) have up to {max(too_long)} CLIP tokens; only the first "
        f"max_tokens = {max_tokens} (start and end tokens included) are used",
        modiff.TruncationWarning,
        stacklevel=stacklevel,
    )
    eos = tokenizer.eos_token_id
    return [list(r) if len(r) <= max_tokens else [*r[: max_tokens - 1], eos] for r in rows]


def hidden_states(
    text_model: Any, ids: Tensor, *, attention_mask: Tensor | None = None, skip_layers: int = 0
) -> tuple[Tensor, Tensor]:
    """``(tokens [B, L, D], pooled [B, D])`` of a ``CLIPTextModel``.

    ``tokens`` is the last hidden state or, with ``skip_layers = k``, the state
    ``k`` layers earlier passed through the final layer norm, as Stable
    Diffusion's "clip skip" does; ``pooled`` is CLIP's pooled output (the final
    state at the end token) either way.
    """
    out = text_model(input_ids=ids, attention_mask=attention_mask, output_hidden_states=skip_layers > 0)
    if skip_layers:
        tokens = text_model.final_layer_norm(out.hidden_states[-(skip_layers + 1)])
    else:
        tokens = out.last_hidden_state
    return tokens, out.pooler_output
