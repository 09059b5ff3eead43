"""Skeleton of a text embedder: hashed word vectors plus positions."""

from __future__ import annotations

from . import RoleTemplate

SETTINGS = r'''"""Settings of ``$name`` (pydantic only: ``modiff plugins`` imports this module)."""

from __future__ import annotations

from pydantic import Field

import modiff


class $settings_class(modiff.ComponentSettings):
    """The keys a ``[text_embedder]`` table with ``plugin = "$name"`` accepts."""

    dim: int = Field(32, ge=1, description="Width of every token vector.")
    max_tokens: int = Field(
        16, ge=2, description="Tokens per prompt, the start token included; longer prompts are cut."
    )
    buckets: int = Field(4096, ge=2, description="Rows of the word table; words are hashed into them.")
    seed: int = Field(0, description="Seed of the initial vectors (the same seed gives the same vectors).")
    joint_training: bool = Field(
        False, description="Train the vectors with the denoiser (otherwise they stay at their random values)."
    )
'''

COMPONENT = r'''"""Hashed word vectors: a text embedder with no vocabulary to fit.

A prompt is lower-cased and split into words and punctuation; each word is
hashed (BLAKE2b, stable across processes and machines) into one of
``buckets`` rows of a table of vectors, and a learned position vector is
added. A start token is always first, so even the empty prompt has one real
token (attention over no tokens at all would be undefined). ``pooled`` is the
mean of the real tokens.

The vectors start random (from ``seed``, so a rebuild is identical) and are
trained with the denoiser when ``joint_training`` is set. Different words
almost always get different rows; ``buckets`` bounds the collisions.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Sequence

import torch
from torch import nn

import modiff
from modiff.protocols import TextEmbedding

from .settings import $settings_class

WORDS = re.compile(r"\w+|[^\w\s]")


class HashedWordEmbedder(nn.Module):
    def __init__(self, settings: $settings_class):
        super().__init__()
        self.dim = settings.dim
        self.max_tokens = settings.max_tokens
        self.buckets = settings.buckets
        self.joint_training = settings.joint_training
        g = torch.Generator().manual_seed(settings.seed)
        #: Row 0 is the start token; rows 1..buckets hold the hashed words.
        self.words = nn.Parameter(torch.randn(settings.buckets + 1, settings.dim, generator=g))
        self.positions = nn.Parameter(0.1 * torch.randn(settings.max_tokens, settings.dim, generator=g))

    def token_ids(self, prompt: str) -> list[int]:
        """The start token, then one hashed row per word (not truncated)."""
        ids = [0]
        for word in WORDS.findall(prompt.lower()):
            digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            ids.append(1 + int.from_bytes(digest, "little") % self.buckets)
        return ids

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        """``[B, L, dim]`` tokens padded (with zeros) to the longest prompt of the batch."""
        ids = [self.token_ids(p) for p in prompts]
        too_long = sum(len(i) > self.max_tokens for i in ids)
        if too_long:
            warnings.warn(
                f"{too_long} prompt(s) longer than max_tokens = {self.max_tokens} tokens were truncated",
                UserWarning,
                stacklevel=2,
            )
        ids = [i[: self.max_tokens] for i in ids]
        device = self.words.device
        length = max((len(i) for i in ids), default=1)
        index = torch.zeros(len(ids), length, dtype=torch.long)
        mask = torch.zeros(len(ids), length, dtype=torch.bool)
        for row, i in enumerate(ids):
            index[row, : len(i)] = torch.tensor(i)
            mask[row, : len(i)] = True
        index, mask = index.to(device), mask.to(device)
        tokens = (self.words[index] + self.positions[:length]) * mask[..., None]
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return TextEmbedding(tokens, mask, pooled)


def build_component(settings: $settings_class, context: modiff.BuildContext) -> HashedWordEmbedder:
    return HashedWordEmbedder(settings)
'''

TESTS = r'''

class $test_class($contract):
    plugin = "$name"
    settings: ClassVar[dict[str, Any]] = {"dim": 16, "max_tokens": 12}
    pads_to_longest = True  # a batch is as long as its longest prompt

    def registry(self) -> modiff.Registry:
        return REGISTRY


class ${test_class}Joint($test_class):
    """Trained with the denoiser: gradients must reach the vectors."""

    settings: ClassVar[dict[str, Any]] = {"dim": 8, "max_tokens": 8, "joint_training": True}


def test_words_are_case_insensitive_and_seeded() -> None:
    e = ${test_class}().build()
    a, b = e.embed(["A Red Circle"]), e.embed(["a red circle"])
    torch.testing.assert_close(a.tokens, b.tokens)
    other = ${test_class}().build(seed=1)
    assert not torch.allclose(other.embed(["a red circle"]).tokens, b.tokens)
'''

TEMPLATE = RoleTemplate(
    role="text_embedder",
    hook="register_text_embedders",
    contract="TextEmbedderContract",
    summary="hashed word vectors with learned positions, no vocabulary to fit",
    settings_class="HashedWordsSettings",
    settings=SETTINGS,
    component=COMPONENT,
    tests=TESTS,
    test_imports=("import torch",),
)
