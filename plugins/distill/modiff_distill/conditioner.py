"""The student's conditioning: the teacher's, plus the guidance scale as a vector.

Guidance is folded into the student (Luo et al. 2023): instead of two
denoiser calls mixed by the guidance scale ``w``, the student is told ``w``
and makes one call. ``w`` enters as a sinusoidal embedding in the
conditioning's ``vector``, which the denoiser adds to its time embedding
(:mod:`.student`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

import modiff
from modiff.protocols import Conditioning, ConditioningSpec, TextEmbedding

from .config import ConsistencySettings
from .teacher import load_teacher


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """``[B]`` guidance scales -> ``[B, dim]`` sinusoids (LCM's embedding of ``1000 w``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=w.device) / max(half - 1, 1))
    angles = 1000.0 * w.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class GuidanceConditioner(nn.Module):
    """The teacher's conditioner (frozen) with the guidance scale added as ``vector``.

    ``condition`` and ``null`` take ``guidance`` (``[B]`` or one number); left
    out, :attr:`guidance` is used: the run's ``[conditioner] guidance`` unless
    a generation sets another (:class:`~modiff_distill.task.ConsistencyDistillation`).
    """

    def __init__(self, base: Any, settings: ConsistencySettings):
        super().__init__()
        self.base = base
        self.settings = settings
        self.guidance = settings.guidance
        spec = base.spec
        self.spec = ConditioningSpec(spec.concat_channels, spec.context_dim, settings.embedding_dim)

    def _with_vector(
        self, cond: Conditioning, batch: int, guidance: Tensor | float | None, device: Any
    ) -> Conditioning:
        w = self.guidance if guidance is None else guidance
        w = torch.as_tensor(w, dtype=torch.float32, device=device).reshape(-1).expand(batch)
        return Conditioning(cond.concat, cond.context, cond.context_mask, guidance_embedding(w, self.spec.vector_dim))

    def condition(
        self,
        text: TextEmbedding | None,
        *,
        image_context: Tensor | None = None,
        batch_size: int | None = None,
        guidance: Tensor | float | None = None,
    ) -> Conditioning:
        cond = self.base.condition(text, image_context=image_context, batch_size=batch_size)
        batch = batch_size if batch_size is not None else _batch(cond)
        return self._with_vector(cond, batch, guidance, _device(cond))

    def null(
        self,
        batch_size: int,
        *,
        like: TextEmbedding | None = None,
        image_context: Tensor | None = None,
        guidance: Tensor | float | None = None,
    ) -> Conditioning:
        cond = self.base.null(batch_size, like=like, image_context=image_context)
        return self._with_vector(cond, batch_size, guidance, _device(cond))


def _batch(cond: Conditioning) -> int:
    for value in (cond.context, cond.concat, cond.vector):
        if value is not None:
            return int(value.shape[0])
    raise ValueError("the teacher's conditioning is empty; pass batch_size")


def _device(cond: Conditioning) -> Any:
    for value in (cond.context, cond.concat, cond.vector):
        if value is not None:
            return value.device
    return None


def build_consistency(settings: ConsistencySettings, context: modiff.BuildContext) -> GuidanceConditioner:
    """The teacher's conditioner with the guidance vector; the teacher's text embedder must be this run's."""
    teacher = load_teacher(settings.teacher, "[conditioner] teacher", context.device)
    base = teacher.components.conditioner
    if base is None:
        raise modiff.SettingsError([f"[conditioner] teacher = {settings.teacher!r} has no conditioner to distill"])
    if context.text_embedder is not teacher.components.text_embedder:
        raise modiff.SettingsError(
            [
                f"[conditioner] teacher = {settings.teacher!r} does not fit this run's text embedder: use "
                f'[text_embedder] plugin = "teacher" with teacher = {settings.teacher!r}'
            ]
        )
    if context.encoder is not teacher.components.encoder:
        raise modiff.SettingsError(
            [
                f"[conditioner] teacher = {settings.teacher!r} does not fit this run's encoder (another latent "
                f'space): use [encoder] plugin = "teacher" with teacher = {settings.teacher!r}'
            ]
        )
    return GuidanceConditioner(base, settings)
