"""The contrastive objective CLIP is trained with, and retrieval accuracy.

Images and captions are mapped into one space; in a batch of ``B`` pairs, each
image's caption must score higher than the other ``B - 1`` captions, and each
caption's image higher than the other images (a symmetric InfoNCE loss). The
same scores, ranked, give retrieval accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: CLIP caps the learned temperature so logits stay at most 100 times the cosine.
MAX_LOGIT_SCALE = math.log(100.0)


def same_caption(captions: Sequence[Hashable], device: torch.device | None = None) -> Tensor:
    """``[B, B]`` bool: pairs whose captions (or any hashable keys) are equal."""
    ids: dict[Hashable, int] = {}
    codes = torch.tensor([ids.setdefault(c, len(ids)) for c in captions], device=device)
    return codes[:, None] == codes[None, :]


def contrastive_loss(text: Tensor, image: Tensor, logit_scale: Tensor, captions: Sequence[str] | None = None) -> Tensor:
    """Symmetric InfoNCE over a batch of ``B`` matching ``text``/``image`` features ``[B, P]``.

    When ``captions`` are given, pairs with identical captions count as
    matches of each other (the probability mass is shared): a batch of a
    small world often holds the same caption twice, and pushing an image away
    from a caption that describes it exactly would teach noise.
    """
    t = F.normalize(text.float(), dim=-1)
    i = F.normalize(image.float(), dim=-1)
    logits = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp() * (t @ i.T)  # [texts, images]
    if captions is None:
        target = torch.eye(len(t), device=t.device)
    else:
        target = same_caption(captions, t.device).float()
        target = target / target.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T))


@torch.no_grad()
def retrieval_accuracy(
    image_features: Tensor,
    text_features: Tensor,
    captions: Sequence[str],
    keys: Sequence[Hashable] | None = None,
) -> dict[str, float]:
    """Top-1 retrieval among ``N`` held-out pairs, both directions, and its chance level.

    Image -> caption is correct when the best-scoring caption has the same
    key as the image's own caption (default key: the caption string, so
    another image's identical caption counts; pass ``keys`` to count any
    caption describing the same content, whatever its wording). Caption ->
    image likewise. ``chance`` is the expected image -> caption accuracy of
    random scores.
    """
    i = F.normalize(image_features.float(), dim=-1)
    t = F.normalize(text_features.float(), dim=-1)
    scores = i @ t.T  # [images, captions]
    same = same_caption(list(keys) if keys is not None else list(captions), scores.device)
    rows = torch.arange(len(captions), device=scores.device)
    i2t = same[rows, scores.argmax(1)].float().mean()
    t2i = same[rows, scores.argmax(0)].float().mean()
    chance = same.float().mean(1).mean()
    return {"image_to_text": float(i2t), "text_to_image": float(t2i), "chance": float(chance)}
