"""Skeleton of a conditioner: projected text tokens and pooled vector."""

from __future__ import annotations

from . import RoleTemplate

SETTINGS = r'''"""Settings of ``$name`` (pydantic only: ``modiff plugins`` imports this module)."""

from __future__ import annotations

from pydantic import Field

import modiff


class $settings_class(modiff.ComponentSettings):
    """The keys a ``[conditioner]`` table with ``plugin = "$name"`` accepts."""

    width: int = Field(64, ge=1, description="Width of the context (and of the vector) the denoiser receives.")
    vector: bool = Field(True, description="Also give the denoiser the pooled text as a vector.")
'''

COMPONENT = r'''"""Text tokens projected to a context the denoiser cross-attends to, and the
pooled text projected to a vector added to its time embedding.

The null conditioning (for classifier-free guidance and condition dropout)
is "no text": a zero context as long as the prompts' tokens (so that the
conditional and unconditional halves of a guided batch line up), of which
only the first position is real, and a zero vector. This
conditioner takes no image context (masks, masked images); a conditioner
that does would add ``concat_channels`` to its spec.
"""

from __future__ import annotations

import torch
from torch import nn

import modiff
from modiff.protocols import Conditioning, ConditioningSpec, TextEmbedding

from .settings import $settings_class


class ProjectedText(nn.Module):
    def __init__(self, settings: $settings_class, text_dim: int):
        super().__init__()
        w = settings.width
        self.to_context = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, w))
        self.to_vector = nn.Linear(text_dim, w) if settings.vector else None
        self.spec = ConditioningSpec(concat_channels=0, context_dim=w, vector_dim=w if settings.vector else None)

    def condition(
        self,
        text: TextEmbedding | None,
        *,
        image_context: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> Conditioning:
        if image_context is not None:
            raise ValueError("the conditioner $name takes no image context; choose one that concatenates channels")
        if text is None:
            if batch_size is None:
                raise ValueError("condition(None) needs batch_size")
            return self.null(batch_size)
        vector = self.to_vector(text.pooled) if self.to_vector is not None else None
        return Conditioning(context=self.to_context(text.tokens), context_mask=text.mask, vector=vector)

    def null(
        self, batch_size: int, *, like: TextEmbedding | None = None, image_context: torch.Tensor | None = None
    ) -> Conditioning:
        if image_context is not None:
            raise ValueError("the conditioner $name takes no image context; choose one that concatenates channels")
        weight = self.to_context[1].weight  # the null lives where, and in the dtype, the weights do
        width = self.spec.context_dim or 0
        length = 1 if like is None else int(like.tokens.shape[1])
        context = torch.zeros(batch_size, length, width, device=weight.device, dtype=weight.dtype)
        mask = torch.zeros(batch_size, length, dtype=torch.bool, device=weight.device)
        mask[:, 0] = True  # one real position: attention over nothing would be undefined
        vector = (
            torch.zeros(batch_size, width, device=weight.device, dtype=weight.dtype)
            if self.to_vector is not None
            else None
        )
        return Conditioning(context=context, context_mask=mask, vector=vector)


def build_component(settings: $settings_class, context: modiff.BuildContext) -> ProjectedText:
    if context.text_embedder is None:
        raise modiff.ModiffError("the conditioner $name needs a [text_embedder] to condition on")
    return ProjectedText(settings, int(context.text_embedder.dim))
'''

TESTS = r'''

class $test_class($contract):
    plugin = "$name"
    settings: ClassVar[dict[str, Any]] = {"width": 12}

    def registry(self) -> modiff.Registry:
        return REGISTRY


class ${test_class}ContextOnly($test_class):
    settings: ClassVar[dict[str, Any]] = {"width": 8, "vector": False}


def test_null_is_zeros_with_one_real_position() -> None:
    c = ${test_class}().build()
    null = c.null(3)
    assert null.context is not None and null.context.shape == (3, 1, 12)
    assert not null.context.any() and not null.vector.any() and bool(null.context_mask.all())
    like = modiff.TextEmbedding(torch.ones(3, 5, 16), torch.ones(3, 5, dtype=torch.bool), torch.ones(3, 16))
    longer = c.null(3, like=like)
    assert longer.context.shape == (3, 5, 12) and longer.context_mask.sum(1).tolist() == [1, 1, 1]


def test_image_context_is_refused() -> None:
    c = ${test_class}().build()
    with pytest.raises(ValueError, match="no image context"):
        c.condition(None, batch_size=1, image_context=torch.zeros(1, 1, 8, 8))
'''

TEMPLATE = RoleTemplate(
    role="conditioner",
    hook="register_conditioners",
    contract="ConditionerContract",
    summary="text tokens projected to a cross-attention context and the pooled text to a vector",
    settings_class="ProjectedTextSettings",
    settings=SETTINGS,
    component=COMPONENT,
    tests=TESTS,
    test_imports=("import pytest", "import torch"),
)
