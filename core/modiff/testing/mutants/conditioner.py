"""Mutants of :class:`~modiff.testing.toys.ToyConditioner`."""

from __future__ import annotations

import torch

from ...protocols import Conditioning, TextEmbedding
from ..toys import ToyConditioner
from .base import mutant


@mutant("conditioner", "ignores an input", "test_null_is_one_row_as_long_as_the_prompts")
class NullIgnoresLike(ToyConditioner):
    """null(like=...) gives a one-position context whatever the prompts' length."""

    def null(self, batch_size, *, like=None, image_context=None):  # type: ignore[no-untyped-def]
        return super().null(batch_size, image_context=image_context)


@mutant("conditioner", "leaks across the batch", "test_null_is_one_row_as_long_as_the_prompts")
class NullFromThePrompts(ToyConditioner):
    """The null vector is the projection of the prompts' mean pooled vector, not a fixed one."""

    def null(self, batch_size, *, like=None, image_context=None):  # type: ignore[no-untyped-def]
        out = super().null(batch_size, like=like, image_context=image_context)
        if like is None:
            return out
        vector = self.to_vector(like.pooled.mean(0, keepdim=True)).expand(batch_size, -1)
        return Conditioning(out.concat, out.context, out.context_mask, vector)


@mutant("conditioner", "padding leaks", "test_output_and_null_fit_the_spec")
class NullMaskHasNoRealPosition(ToyConditioner):
    """The null's context mask is all False (attention over nothing is undefined)."""

    def null(self, batch_size, *, like=None, image_context=None):  # type: ignore[no-untyped-def]
        out = super().null(batch_size, like=like, image_context=image_context)
        assert out.context_mask is not None
        return Conditioning(out.concat, out.context, torch.zeros_like(out.context_mask), out.vector)


@mutant("conditioner", "padding leaks", "test_padding_does_not_matter")
class VectorFromEveryPosition(ToyConditioner):
    """The vector is projected from the mean of all token positions, padding included,
    instead of the pooled vector."""

    def condition(self, text, *, image_context=None, batch_size=None):  # type: ignore[no-untyped-def]
        if text is None:
            return super().condition(text, image_context=image_context, batch_size=batch_size)
        out = super().condition(text, image_context=image_context, batch_size=batch_size)
        return Conditioning(out.concat, out.context, out.context_mask, self.to_vector(text.tokens.mean(1)))


@mutant("conditioner", "padding leaks", "test_padding_does_not_matter")
class DropsTheContextMask(ToyConditioner):
    """The context is returned without its mask, so padding positions count as real."""

    def condition(self, text, *, image_context=None, batch_size=None):  # type: ignore[no-untyped-def]
        out = super().condition(text, image_context=image_context, batch_size=batch_size)
        return out if text is None else Conditioning(out.concat, out.context, None, out.vector)


@mutant("conditioner", "leaks across the batch", "test_batch_independence")
class NormalisesVectorsOverTheBatch(ToyConditioner):
    """Vectors are divided by the norm of the whole batch's vectors."""

    def condition(self, text, *, image_context=None, batch_size=None):  # type: ignore[no-untyped-def]
        out = super().condition(text, image_context=image_context, batch_size=batch_size)
        if text is None or out.vector is None:
            return out
        return Conditioning(out.concat, out.context, out.context_mask, out.vector / out.vector.norm().clamp(min=1e-6))


@mutant(
    "conditioner", "ignores an input", "test_image_context_is_appended_unchanged", "test_output_and_null_fit_the_spec"
)
class ForgetsTheImageContext(ToyConditioner):
    """condition(text, image_context=...) leaves the image context out when there is text."""

    def condition(self, text, *, image_context=None, batch_size=None):  # type: ignore[no-untyped-def]
        if text is None:
            return super().condition(text, image_context=image_context, batch_size=batch_size)
        return Conditioning(None, self.to_context(text.tokens), text.mask, self.to_vector(text.pooled))


@mutant("conditioner", "wrong range or type", "test_image_context_is_appended_unchanged")
class RescalesTheImageContext(ToyConditioner):
    """The image context is mapped from [0, 1] to [-1, 1] before it is appended."""

    def condition(self, text, *, image_context=None, batch_size=None):  # type: ignore[no-untyped-def]
        image = None if image_context is None else image_context * 2 - 1
        return super().condition(text, image_context=image, batch_size=batch_size)


@mutant("conditioner", "wrong dtype", "test_dtype_follows_the_inputs")
class NullInFloat32(ToyConditioner):
    """null makes its zeros with torch.zeros(..., device=...) and no dtype: float32 always."""

    def null(self, batch_size, *, like=None, image_context=None):  # type: ignore[no-untyped-def]
        out = super().null(batch_size, like=like, image_context=image_context)
        return Conditioning(out.concat, out.context.float(), out.context_mask, out.vector.float())  # type: ignore[union-attr]


@mutant("conditioner", "wrong device", "test_outputs_follow_the_device")
class NullOnTheCpu(ToyConditioner):
    """null makes its zeros with torch.zeros(shape) (no device=), so they stay on the CPU."""

    def null(self, batch_size, *, like=None, image_context=None):  # type: ignore[no-untyped-def]
        out = super().null(batch_size, like=like, image_context=image_context)
        assert out.context is not None and out.vector is not None
        return Conditioning(out.concat, torch.zeros(out.context.shape), out.context_mask, torch.zeros(out.vector.shape))


@mutant("conditioner", "wrong shape", "test_output_and_null_fit_the_spec")
class UnconditionalBatchOfOne(ToyConditioner):
    """condition(None, batch_size=B) ignores batch_size and returns one row."""

    def condition(self, text, *, image_context=None, batch_size=None):  # type: ignore[no-untyped-def]
        if text is None:
            return self.null(1, image_context=None if image_context is None else image_context[:1])
        return super().condition(text, image_context=image_context, batch_size=batch_size)


@mutant("conditioner", "state kept between calls", "test_text_changes_the_output")
class CachesTheFirstContext(ToyConditioner):
    """The projected context and vector of the first call are reused for every later call."""

    def condition(self, text, *, image_context=None, batch_size=None):  # type: ignore[no-untyped-def]
        if text is None:
            return super().condition(text, image_context=image_context, batch_size=batch_size)
        if getattr(self, "_first", None) is None or self._first[0].shape[:2] != text.tokens.shape[:2]:
            self._first = (self.to_context(text.tokens), self.to_vector(text.pooled))
        return Conditioning(None, self._first[0], text.mask, self._first[1]).with_concat(image_context)


@mutant("conditioner", "modifies its input", "test_inputs_are_left_unchanged_and_no_random_numbers_drawn")
class ZeroesPaddingInPlace(ToyConditioner):
    """The padding of the text tokens is zeroed in place (tokens.masked_fill_), in the caller's embedding."""

    def condition(self, text, *, image_context=None, batch_size=None):  # type: ignore[no-untyped-def]
        if text is not None:
            text.tokens.masked_fill_(~text.mask[..., None], 0.0)
            text = TextEmbedding(text.tokens, text.mask, text.pooled)
        return super().condition(text, image_context=image_context, batch_size=batch_size)


@mutant("conditioner", "global random state", "test_deterministic")
class InitialisedFromTheClock(ToyConditioner):
    """The vector projection is initialised from torch.Generator().seed() (a seed from the
    clock), so two builds of the same settings differ."""

    def __init__(self, s, text_dim, image_channels=0, size=None):  # type: ignore[no-untyped-def]
        super().__init__(s, text_dim, image_channels, size)
        g = torch.Generator()
        g.seed()
        with torch.no_grad():
            self.to_vector.weight.copy_(torch.randn(self.to_vector.weight.shape, generator=g))
