"""The prompt list the prompt-accuracy evaluator scores, with its answers.

Prompts are made from structured descriptions, so the truth of each prompt is
known exactly and never has to be parsed back. The list is deterministic in
its arguments: prompt ``i`` depends only on ``(seed, i)`` and the mix
settings, so two runs evaluated with the same settings see the same prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .captions import TEMPLATES, caption
from .world import PAIRS, SIZES, ShapeObject, validate_holdout

_PROMPT_STREAM = 0x5EED  # keeps prompt draws apart from the dataset's (seed, index) draws


@dataclass(frozen=True)
class PromptCase:
    """One evaluation prompt and what a correct image shows.

    Attributes:
        prompt: the text given to the pipeline.
        objects: the objects it names (with cells; no positions within cells).
        holdout: whether it names a held-out colour–shape pair.
    """

    prompt: str
    objects: tuple[ShapeObject, ...]
    holdout: bool = False

    @property
    def num_objects(self) -> int:
        return len(self.objects)

    @property
    def unplaced(self) -> bool:
        """Whether the prompt names no place for any object ("a red circle"):
        each object is right in any cell."""
        return all(o.cell is None for o in self.objects)


def _spread(i: int, fraction: float) -> bool:
    """Whether item ``i`` is one of the ``fraction`` share, spread evenly
    (so any prefix of the list keeps roughly the same mix)."""
    return int((i + 1) * fraction + 1e-9) > int(i * fraction + 1e-9)


def evaluation_prompts(
    num_prompts: int = 300,
    *,
    seed: int = 0,
    holdout: Sequence[str] = (),
    two_object_fraction: float = 0.5,
    holdout_fraction: float = 0.2,
    unplaced_fraction: float = 0.0,
) -> list[PromptCase]:
    """A deterministic list of ``num_prompts`` prompts with their answers.

    * ``two_object_fraction`` of the prompts name two objects (in different
      cells), the rest one.
    * When ``holdout`` is not empty, ``holdout_fraction`` of the prompts (and
      at least one per held-out pair, as far as ``num_prompts`` allows) are
      built around a held-out pair, cycling through the pairs; every other
      object is any of the 18 pairs, so held-out pairs can also turn up there.
    * About ``unplaced_fraction`` of the prompts (decided per prompt by a
      draw of its own) name no place for their objects, in the templates'
      unplaced form ("a red circle"); their objects have ``cell=None``. The
      other prompts are the same whatever the fraction.
    * Each prompt uses one of the caption templates, so the evaluation sees
      the same phrasing variety as training.
    """
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be at least 1, got {num_prompts}")
    fractions = (
        ("two_object_fraction", two_object_fraction),
        ("holdout_fraction", holdout_fraction),
        ("unplaced_fraction", unplaced_fraction),
    )
    for name, value in fractions:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")
    held = validate_holdout(holdout)
    held_set = set(held)
    hold_share = 0.0
    if held:
        hold_share = min(1.0, max(holdout_fraction, len(held) / num_prompts))
    sizes = list(SIZES)
    cases: list[PromptCase] = []
    next_held = 0
    for i in range(num_prompts):
        rng = np.random.default_rng([seed, i, _PROMPT_STREAM])
        n = 2 if _spread(i, two_object_fraction) else 1
        cells = rng.permutation(9)[:n]
        u = rng.random(3 * n + 1)
        pairs = [PAIRS[int(u[1 + k] * len(PAIRS))] for k in range(n)]
        if held and _spread(i, hold_share):
            pairs[int(u[2 * n + 1] * n) if n > 1 else 0] = held[next_held % len(held)]
            next_held += 1
        placed = bool(rng.random() >= unplaced_fraction)  # drawn after the rest: other prompts stay as they were
        objects = tuple(
            ShapeObject(
                *pair.split(), cell=int(cell) if placed else None, size=sizes[int(u[1 + n + k] * len(sizes))]
            )
            for k, (pair, cell) in enumerate(zip(pairs, cells))
        )
        template = int(u[0] * len(TEMPLATES))
        text = caption(objects, template, placed=placed)
        cases.append(PromptCase(text, objects, holdout=any(o.pair in held_set for o in objects)))
    return cases
