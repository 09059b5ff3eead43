"""How often a reader of images gets a verdict wrong, measured on a known-answer set.

Every image of the set is scored twice: against its own scene (the true
verdict is "correct") and against one altered copy of it (another colour,
shape or cell for one object, one object more, or one fewer: the true verdict
is "wrong", in known attributes). The true flags come from the same scoring
rule (:func:`.check.score`) applied to the scene's own objects, so the error
counts only what the reader misreads. An attribute's error is the share of
checks whose flag differs from the truth; the whole verdict's error the
share whose ``correct`` differs.

The committed measurement (``measured_error.json`` beside this module) is
written by ``benchmarks/evaluator_error.py`` from the committed set; the
evaluator reads it to state its error beside its accuracies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..shapes.world import CELLS, COLOURS, SHAPES, ShapeObject
from .blobs import measure
from .check import CheckResult, Detection, score
from .known_answers import KnownAnswers, _object_mask

#: Reads an ``[H, W, 3]`` uint8 image: the objects it shows, largest first.
Reader = Callable[[np.ndarray], Sequence[Detection]]

#: The attributes a verdict is made of, as :class:`CheckResult` names them.
ATTRIBUTES = ("colour", "shape", "position", "count", "correct")
#: Their metrics in the evaluator's result (``correct`` is the whole verdict, ``accuracy``).
METRICS = {"colour": "colour_accuracy", "shape": "shape_accuracy", "position": "position_accuracy",
           "count": "count_accuracy", "correct": "accuracy"}

MEASURED_ERROR = Path(__file__).with_name("measured_error.json")

ALTERATIONS = ("colour", "shape", "cell", "one more", "one fewer")


def truth(objects: Sequence[ShapeObject], image_size: int) -> list[Detection]:
    """The scene's objects as a perfect reader would report them."""
    out = []
    for obj in objects:
        mask = _object_mask(obj, image_size)
        labels = np.where(mask, 0, -1)
        rgb = np.zeros((image_size, image_size, 3), dtype=np.uint8)
        (blob,) = measure(labels, 1, rgb)
        assert obj.cell is not None
        out.append(Detection(colour=obj.colour, shape=obj.shape, cell=obj.cell, blob=blob))
    out.sort(key=lambda d: (-d.blob.area, d.blob.bbox[1], d.blob.bbox[0]))
    return out


def altered(objects: Sequence[ShapeObject], index: int) -> tuple[str, tuple[ShapeObject, ...]]:
    """One altered copy of a scene's objects, chosen by ``index``: what a wrong
    prompt for this image would name."""
    objs = list(objects)
    kind = ALTERATIONS[index % len(ALTERATIONS)]
    if kind == "one fewer" and len(objs) < 2:
        kind = "one more"
    first = objs[0]
    used = {o.cell for o in objs}
    if kind == "colour":
        objs[0] = replace(first, colour=COLOURS[(COLOURS.index(first.colour) + 1 + index % 5) % len(COLOURS)])
    elif kind == "shape":
        objs[0] = replace(first, shape=SHAPES[(SHAPES.index(first.shape) + 1 + index % 2) % len(SHAPES)])
    elif kind == "cell":
        free = [c for c in range(len(CELLS)) if c not in used]
        objs[0] = replace(first, cell=free[index % len(free)], origin=None)
    elif kind == "one more":
        free = [c for c in range(len(CELLS)) if c not in used]
        objs.append(ShapeObject(COLOURS[index % len(COLOURS)], SHAPES[index % len(SHAPES)], free[index % len(free)]))
    else:
        objs = objs[1:]
    return kind, tuple(objs)


def _flags(result: CheckResult) -> dict[str, bool]:
    return {a: bool(getattr(result, a)) for a in ATTRIBUTES}


def checks(answers: KnownAnswers, reader: Reader) -> list[dict[str, Any]]:
    """Every check of the set: per image its own scene and one altered copy,
    with the reader's flags, the true flags, and per object whether it was read right."""
    out = []
    for i, (image, objects) in enumerate(zip(answers.images, answers.objects)):
        found = list(reader(image))
        true = truth(objects, answers.image_size)
        kind, wrong = altered(objects, answers.indices[i])
        for name, named in (("own", tuple(objects)), (kind, wrong)):
            got, want = score(found, named), score(true, named)
            row: dict[str, Any] = {"image": i, "prompt": name, "objects": len(objects),
                                   "got": _flags(got), "want": _flags(want)}
            if name == "own":
                row["read"] = [
                    (o.size, o.shape, j is not None and found[j].colour == o.colour and found[j].shape == o.shape
                     and found[j].cell == o.cell)
                    for o, j in zip(named, got.matches)
                ]
            out.append(row)
    return out


def _rate(rows: Sequence[dict[str, Any]], attr: str) -> float | None:
    return None if not rows else sum(r["got"][attr] != r["want"][attr] for r in rows) / len(rows)


def summarise_error(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Error per attribute and of the whole verdict: over all checks, over the
    own-scene checks (false rejections) and the altered ones (false
    acceptances), per number of objects; and per object size and shape, the
    share of objects read wrong (colour, shape or cell) on the own-scene checks."""
    own = [r for r in rows if r["prompt"] == "own"]
    altered_rows = [r for r in rows if r["prompt"] != "own"]
    out: dict[str, Any] = {
        "checks": len(rows),
        "error": {METRICS[a]: _rate(rows, a) for a in ATTRIBUTES},
        "false_rejection": {METRICS[a]: _rate(own, a) for a in ATTRIBUTES},
        "false_acceptance": {METRICS[a]: _rate(altered_rows, a) for a in ATTRIBUTES},
        "by_objects": {
            str(n): {METRICS[a]: _rate([r for r in rows if r["objects"] == n], a) for a in ATTRIBUTES}
            for n in sorted({r["objects"] for r in rows})
        },
    }
    objects: dict[str, list[bool]] = {}
    for r in own:
        for size, shape, ok in r["read"]:
            objects.setdefault(f"{size} {shape}", []).append(ok)
    out["objects_misread"] = {
        k: {"objects": len(v), "error": 1.0 - sum(v) / len(v)} for k, v in sorted(objects.items())
    }
    return out


def measure_error(answers: KnownAnswers, reader: Reader) -> dict[str, Any]:
    """:func:`summarise_error` of a reader on a set."""
    return summarise_error(checks(answers, reader))


@lru_cache(maxsize=1)
def committed() -> dict[str, Any]:
    """The committed measurement (empty when none has been made)."""
    return json.loads(MEASURED_ERROR.read_text()) if MEASURED_ERROR.is_file() else {}


def measured_error(judge: str, image_size: int) -> dict[str, Any] | None:
    """What the evaluator states beside its accuracies: ``judge``'s measured error
    at ``image_size`` (per metric), the set it was measured on, and how; ``None``
    where it was not measured."""
    entry = committed().get("judges", {}).get(judge, {}).get(str(image_size))
    if entry is None:
        return None
    measured_set = committed().get("set", {}).get(str(image_size), {})
    return {
        "judge": judge,
        "image_size": image_size,
        "error": dict(entry["error"]),
        "checks": entry["checks"],
        **({"thresholds": entry["thresholds"]} if "thresholds" in entry else {}),
        # the images the error was counted on: the held-out set (older measurements name only the training file)
        "measured_on": measured_set.get("held_out_file", measured_set.get("file", "")),
    }
