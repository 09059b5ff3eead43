"""The prompt-accuracy evaluator: generate images for known prompts and check
them with the rule-based reader of :mod:`.check`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import modiff

from ..config import PromptAccuracySettings
from ..shapes.captions import CaptionError, parse
from ..shapes.prompts import PromptCase, evaluation_prompts
from .check import CheckResult, Detection, Thresholds, detect, score
from .error import measured_error

log = logging.getLogger("modiff_datasets")


def to_rgb_array(image: Any) -> np.ndarray:
    """A PIL image (any mode) or an ``[H, W, 3]`` uint8 array as ``[H, W, 3]`` uint8."""
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.asarray(image)


def cases_from_prompts(prompts: Sequence[str], holdout: Sequence[str]) -> list[PromptCase]:
    """Read user prompts with the shapes vocabulary; all unreadable ones are
    reported together in one ``ValueError``."""
    held = set(holdout)
    cases, bad = [], []
    for p in prompts:
        try:
            objects = tuple(parse(p))
        except CaptionError as exc:
            bad.append(str(exc))
            continue
        cases.append(PromptCase(p, objects, holdout=any(o.pair in held for o in objects)))
    if bad:
        shown = "\n  ".join(bad[:5]) + ("" if len(bad) <= 5 else f"\n  ... and {len(bad) - 5} more")
        raise ValueError(
            f"{len(bad)} of {len(prompts)} prompts are not in the shapes world's vocabulary, so "
            f"prompt-accuracy cannot check them:\n  {shown}"
        )
    return cases


def item_outcomes(cases: Sequence[PromptCase], results: Sequence[CheckResult]) -> dict[str, Any]:
    """Every accuracy as per-prompt outcomes: the single definition of each number.

    A list holds one entry per prompt: ``1``/``0`` where the prompt counts
    towards that accuracy, ``None`` where it does not (a two-object prompt in
    ``one_object_accuracy``). ``object_accuracy`` counts named objects, not
    prompts, so it is a ratio of sums: ``{"num": objects right, "den": objects
    named}`` per prompt. This is the ``per_item`` form ``modiff.stats`` reads
    (intervals over prompts and seeds in ablation reports).
    """
    pairs = list(zip(cases, results))

    def outcomes(select: Any = lambda c: True, attr: str = "correct") -> list[int | None]:
        return [int(bool(getattr(r, attr))) if select(c) else None for c, r in pairs]

    out: dict[str, Any] = {
        "accuracy": outcomes(),
        "colour_accuracy": outcomes(attr="colour"),
        "shape_accuracy": outcomes(attr="shape"),
        "position_accuracy": outcomes(attr="position"),
        "count_accuracy": outcomes(attr="count"),
        "object_accuracy": {
            "num": [[r.objects_correct] for r in results],
            "den": [[c.num_objects] for c in cases],
        },
        "one_object_accuracy": outcomes(lambda c: c.num_objects == 1),
        "two_object_accuracy": outcomes(lambda c: c.num_objects == 2),
        "holdout_accuracy": outcomes(lambda c: c.holdout),
        "seen_accuracy": outcomes(lambda c: not c.holdout),
        "unplaced_accuracy": outcomes(lambda c: c.unplaced),
        "placed_accuracy": outcomes(lambda c: not c.unplaced),
    }
    for n in (1, 2):
        for attr in ("colour", "shape", "position", "count"):
            name = f"{'one' if n == 1 else 'two'}_object_{attr}_accuracy"
            out[name] = outcomes(lambda c, n=n: c.num_objects == n, attr)
    return out


def _summary(values: Any) -> float | None:
    """The number of one per-prompt outcome: the mean of the counted entries, or
    the ratio of the sums; ``None`` when nothing counts."""
    if isinstance(values, dict):
        den = sum(d[0] for d in values["den"])
        return sum(n[0] for n in values["num"]) / den if den else None
    counted = [v for v in values if v is not None]
    return None if not counted else float(np.mean(counted))


def summarise(cases: Sequence[PromptCase], results: Sequence[CheckResult]) -> dict[str, Any]:
    """The evaluator's numbers from per-prompt results.

    Accuracies over a subset that is empty (no two-object prompts, no held-out
    pairs) are ``None`` rather than a made-up number.
    """
    out: dict[str, Any] = {}
    for name, values in item_outcomes(cases, results).items():
        out[name] = _summary(values)
        if name == "seen_accuracy":  # the counts sit between the totals and the per-attribute breakdown
            out.update(
                num_prompts=len(cases),
                num_one_object=sum(c.num_objects == 1 for c in cases),
                num_two_object=sum(c.num_objects == 2 for c in cases),
                num_holdout=sum(c.holdout for c in cases),
                num_unplaced=sum(c.unplaced for c in cases),
            )
    return out


class PromptAccuracy:
    """Generates an image for each prompt and checks it exactly.

    ``evaluate`` returns the numbers of :func:`summarise` plus ``per_prompt``:
    one dict per prompt (prompt, named objects, what was found, flags), which
    reports and failure galleries use, and ``per_item``: the prompts and every
    accuracy's per-prompt outcomes (:func:`item_outcomes`), from which
    ablation reports draw intervals. Both are lists, which the flat-number
    tables and learning-curve records skip. ``last_cases``/``last_images``
    keep the last run's prompts and images.
    """

    def __init__(self, settings: PromptAccuracySettings, holdout: Sequence[str] = ()) -> None:
        self.settings = settings
        self.holdout: tuple[str, ...] = tuple(holdout)
        self.thresholds = Thresholds(
            threshold=settings.threshold,
            min_area_fraction=settings.min_area_fraction,
            triangle_below=settings.triangle_below,
            square_from=settings.square_from,
            triangle_offset=settings.triangle_offset,
        )
        self.last_cases: list[PromptCase] = []
        self.last_images: list[Any] = []

    def stated_error(self, image_size: int) -> dict[str, Any]:
        """The error this reader was measured to make at ``image_size`` (read from
        the committed measurement, never configured), or a note that it was not:
        rules with other thresholds than the measured ones, or an unmeasured size."""
        error = measured_error(self.settings.judge, image_size)
        if error is not None and self.settings.judge == "rules":
            if error.pop("thresholds", None) != dataclasses.asdict(self.thresholds):
                error = None
        if error is None:
            return {"judge": self.settings.judge, "image_size": image_size, "measured": False}
        return {**error, "measured": True}

    def read(self, image: np.ndarray) -> list[Detection]:
        """The objects in an ``[H, W, 3]`` uint8 image, as the ``judge`` setting reads them."""
        if self.settings.judge == "learned":
            from .judge import committed_judge

            return committed_judge().read(image)
        return detect(image, self.thresholds)

    def cases(self, prompts: Sequence[str] | None = None) -> list[PromptCase]:
        """The prompts to score: ``prompts`` read with the shapes vocabulary,
        or the evaluator's own deterministic list."""
        if prompts is not None:
            return cases_from_prompts(list(prompts), self.holdout)
        s = self.settings
        return evaluation_prompts(
            s.num_prompts,
            seed=s.seed,
            holdout=self.holdout,
            two_object_fraction=s.two_object_fraction,
            holdout_fraction=s.holdout_fraction,
            unplaced_fraction=s.unplaced_fraction,
        )

    def evaluate(
        self, pipeline: modiff.GeneratingPipeline, *, prompts: Sequence[str] | None = None
    ) -> Mapping[str, Any]:
        cases = self.cases(prompts)
        if not cases:
            raise ValueError("prompt-accuracy needs at least one prompt")
        s = self.settings
        kwargs: dict[str, Any] = {"seed": s.seed}
        for name in ("steps", "guidance", "batch_size"):
            value = getattr(s, name)
            if value is not None:
                kwargs[name] = value
        images = list(pipeline.generate([c.prompt for c in cases], **kwargs))
        if len(images) != len(cases):
            raise RuntimeError(f"the pipeline returned {len(images)} images for {len(cases)} prompts")
        arrays = [to_rgb_array(img) for img in images]
        results = [score(self.read(a), c.objects) for c, a in zip(cases, arrays)]
        self.last_cases, self.last_images = cases, images
        out = summarise(cases, results)
        out["evaluator_error"] = self.stated_error(arrays[0].shape[0])
        out["per_item"] = {"ids": [c.prompt for c in cases], "metrics": item_outcomes(cases, results)}
        out["per_prompt"] = [
            {
                "prompt": c.prompt,
                "objects": [o.to_dict() for o in c.objects],
                "holdout": c.holdout,
                **r.to_dict(),
            }
            for c, r in zip(cases, results)
        ]
        log.info("prompt accuracy %.3f over %d prompts", out["accuracy"], len(cases))
        return out
