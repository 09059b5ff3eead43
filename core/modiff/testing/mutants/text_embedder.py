"""Mutants of :class:`~modiff.testing.toys.ToyTextEmbedder`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...protocols import TextEmbedding
from ..toys import ToyTextEmbedder, ToyTextSettings
from .base import mutant


@mutant("text_embedder", "ignores an input", "test_long_prompt_is_truncated_with_a_warning")
class TruncatesSilently(ToyTextEmbedder):
    """Long prompts are cut to max_tokens without a warning."""

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        return super().embed([" ".join(p.split()[: self.max_tokens]) for p in prompts])


@mutant("text_embedder", "sign or off-by-one", "test_long_prompt_is_truncated_with_a_warning")
class KeepsOneTokenTooMany(ToyTextEmbedder):
    """Truncation keeps max_tokens + 1 words."""

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        self.max_tokens += 1
        try:
            return super().embed(prompts)
        finally:
            self.max_tokens -= 1


@mutant("text_embedder", "padding leaks", "test_every_prompt_has_a_real_token", "test_any_prompt")
class EmptyPromptHasNoRealToken(ToyTextEmbedder):
    """An empty or blank prompt gives a row of padding only (its mask is all False)."""

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        out = super().embed(prompts)
        blank = torch.tensor([not p.split() for p in prompts])
        return TextEmbedding(out.tokens, out.mask & ~blank[:, None], out.pooled)


@mutant("text_embedder", "padding leaks", "test_batch_independence", "test_padding_and_batch_invariance")
class PoolsOverPadding(ToyTextEmbedder):
    """pooled is the mean over every position of the batch's length, padding included."""

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        out = super().embed(prompts)
        return TextEmbedding(out.tokens, out.mask, out.tokens.mean(1))


@mutant("text_embedder", "padding leaks", "test_shapes_and_mask", "test_batch_independence")
class MarksPaddingAsReal(ToyTextEmbedder):
    """The mask is True everywhere, padding included."""

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        out = super().embed(prompts)
        return TextEmbedding(out.tokens, torch.ones_like(out.mask), out.pooled)


@mutant("text_embedder", "leaks across the batch", "test_batch_independence", "test_padding_and_batch_invariance")
class CentresOnTheBatchMean(ToyTextEmbedder):
    """pooled vectors are centred on the mean of the batch."""

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        out = super().embed(prompts)
        return TextEmbedding(out.tokens, out.mask, out.pooled - out.pooled.mean(0, keepdim=True))


@mutant("text_embedder", "global random state", "test_deterministic")
class NewWordsFromTheGlobalGenerator(ToyTextEmbedder):
    """A word's vector is drawn with torch.randn (the global state), not from its hash."""

    def _word(self, word: str) -> torch.Tensor:
        return torch.randn(self.dim)


@mutant("text_embedder", "wrong dtype", "test_dtype_follows_the_module")
class TokensInFloat64(ToyTextEmbedder):
    """Tokens and pooled vectors are float64 (a torch.zeros(..., dtype=torch.float64) buffer)."""

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        out = super().embed(prompts)
        return TextEmbedding(out.tokens.double(), out.mask, out.pooled.double())


@mutant("text_embedder", "ignores an input", "test_distinct_prompts_differ")
class EmbedsOnlyTheWordCount(ToyTextEmbedder):
    """Every word gets the same vector: only the number of words is embedded."""

    def _word(self, word: str) -> torch.Tensor:
        return super()._word("word")


@mutant("text_embedder", "state kept between calls", "test_no_state_between_calls")
class GrowsItsVocabularyWhileEmbedding(ToyTextEmbedder):
    """Words get ids in the order they are first seen (a vocabulary grown by embed), so a
    word's vector depends on which prompts came before."""

    def _word(self, word: str) -> torch.Tensor:
        vocabulary = self.__dict__.setdefault("_vocabulary", {})
        index = vocabulary.setdefault(word, len(vocabulary))
        return super()._word(str(index))


@mutant("text_embedder", "state kept between calls", "test_no_state_between_calls")
class KeepsTheFirstBatchLength(ToyTextEmbedder):
    """The padded length of the first batch is kept, and later batches are cut to it."""

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        out = super().embed(prompts)
        if not hasattr(self, "_length"):
            self._length = out.tokens.shape[1]
        n = self._length
        mask = out.mask[:, :n]
        pooled = (out.tokens[:, :n] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return TextEmbedding(out.tokens[:, :n], mask, pooled)


@mutant("text_embedder", "wrong range or type", "test_any_prompt")
class AsciiOnly(ToyTextEmbedder):
    """Words are encoded as ASCII before hashing: any other character raises."""

    def _word(self, word: str) -> torch.Tensor:
        word.encode("ascii")
        return super()._word(word)


@mutant("text_embedder", "wrong device", "test_outputs_follow_the_device")
class TokensOnTheCpu(ToyTextEmbedder):
    """The embedding is built on the CPU and never moved to the embedder's device."""

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        unit = self.unit
        self.unit = torch.ones((), dtype=unit.dtype)
        try:
            return super().embed(prompts)
        finally:
            self.unit = unit


@mutant("text_embedder", "wrong formula", "test_joint_training_reaches_parameters")
class DetachesWhileTrainingJointly(ToyTextEmbedder):
    """It asks to be trained with the denoiser (joint_training = True) but embeds under
    torch.no_grad, so no gradient reaches its weight: the stage trains nothing of it."""

    def __init__(self, s: ToyTextSettings):
        super().__init__(s.model_copy(update={"joint_training": True}))

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        with torch.no_grad():
            return super().embed(prompts)


@mutant("text_embedder", "wrong range or type", "test_is_a_text_embedder")
class JointTrainingAsText(ToyTextEmbedder):
    """joint_training is the setting's text "false", which the core reads as true."""

    def __init__(self, s: ToyTextSettings):
        super().__init__(s)
        self.joint_training = "false"  # type: ignore[assignment]
