"""The prompt-accuracy evaluator's error on generated-looking images with known answers.

    # 1. the known-answer sets: scenes redrawn by a trained run (image-to-image),
    #    one that trains the judge and one, of another seed, only measured on
    python benchmarks/evaluator_error.py make --run RUN --count 6000 --seed 38
    python benchmarks/evaluator_error.py make --run RUN --count 6000 --seed 39 --held-out
    # 2. train the learned judge on the training sets, measure both readers on the held-out ones
    python benchmarks/evaluator_error.py measure
    # 3. both readers on the run's own generated images (agreement, accuracies)
    python benchmarks/evaluator_error.py agree --run RUN

``make`` writes ``benchmarks/results/evaluator/known-answers-<px>.npz`` or, with
``--held-out``, ``known-answers-<px>-held-out.npz`` (the kept images and, as
JSON, the seed, strength, run and scene indices; the objects are redrawn from
the seed). ``measure`` trains the judge on every training set and measures both
readers on each size's held-out set (a size without one holds out the odd
positions of its training set; a size with only a held-out set measures the
judge learnt at the other sizes), writes the judge's
weights (``modiff_datasets/evaluation/judge.json``), the measurement the
evaluator states (``modiff_datasets/evaluation/measured_error.json``) and the
full breakdown (``benchmarks/results/evaluator/error-<px>.json``), and prints
the tables of ``docs/datasets.md``. ``agree`` writes
``benchmarks/results/evaluator/agreement-<px>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from modiff_datasets.evaluation import judge as judges
from modiff_datasets.evaluation.check import Thresholds, detect, score
from modiff_datasets.evaluation.error import MEASURED_ERROR, measure_error
from modiff_datasets.evaluation.known_answers import DEFAULT_STRENGTH, KnownAnswers, _object_mask, make_known_answers

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "evaluator"


def set_path(image_size: int, held_out: bool = False) -> Path:
    """The set that trains the judge (``known-answers-<px>.npz``) or the one only
    measured on (``known-answers-<px>-held-out.npz``, drawn from another seed)."""
    return RESULTS / f"known-answers-{image_size}{'-held-out' if held_out else ''}.npz"


def make(args: argparse.Namespace) -> None:
    from modiff import Pipeline

    pipeline = Pipeline.load(args.run, device="cpu")
    answers = make_known_answers(
        pipeline, args.count, seed=args.seed, strength=args.strength, run=Path(args.run).name
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = set_path(answers.image_size, args.held_out)
    answers.save(path)
    print(f"{path}: kept {len(answers)} of {answers.considered}; dropped {answers.dropped}")


def split(answers: KnownAnswers) -> tuple[KnownAnswers, KnownAnswers]:
    """Even positions train the judge, odd ones are held out (both halves hold every kind of scene)."""
    return answers.subset(range(0, len(answers), 2)), answers.subset(range(1, len(answers), 2))


def parts(image_size: int) -> tuple[KnownAnswers | None, KnownAnswers, str]:
    """``(train, held_out, how)`` at one image size. With a held-out set of its own
    (another seed: scenes, noise and redrawing all new), the judge trains on the
    whole training set and is measured on the held-out one; without, the
    training set's odd positions are held out. A size with only a held-out set
    trains nothing: the judge learnt at the other sizes is measured there."""
    train_path, held_path = set_path(image_size), set_path(image_size, held_out=True)
    train = KnownAnswers.load(train_path) if train_path.is_file() else None
    if held_path.is_file():
        held = KnownAnswers.load(held_path)
        how = f"its own set (seed {held.seed}), never trained on"
        return train, held, how + ("" if train is not None else f"; no {image_size} px image trains the judge")
    assert train is not None, f"no known-answer set at {image_size} px"
    train, held = split(train)
    return train, held, "odd positions of the set"


def sizes() -> list[int]:
    """The image sizes with a known-answer set."""
    return sorted({int(p.stem.split("-")[2]) for p in RESULTS.glob("known-answers-*.npz")})


def masks(answers: KnownAnswers) -> list[np.ndarray]:
    out = []
    for objs in answers.objects:
        m = np.zeros((answers.image_size, answers.image_size), dtype=np.int64)
        for k, o in enumerate(objs):
            m[_object_mask(o, answers.image_size)] = k + 1
        out.append(m)
    return out


def train_judge(train: list[KnownAnswers]) -> judges.Judge:
    """The judge from the training halves: every generated image, its mirror image
    (left and right swapped: every shape of the world, an apex-up triangle too, is
    still itself, so the judge sees each artefact from both sides) and the drawn
    scene it started from."""
    images, ms, objects = [], [], []
    for t in train:
        m = masks(t)
        images += list(t.images) + [np.ascontiguousarray(im[:, ::-1]) for im in t.images] + list(t.sources())
        ms += m + [np.ascontiguousarray(x[:, ::-1]) for x in m] + m
        objects += list(t.objects) * 3
    return judges.fit(*judges.labelled_blobs(images, ms, objects))


def measure(args: argparse.Namespace) -> None:
    if not sizes():
        sys.exit(f"no known-answer set in {RESULTS}: run 'make' first")
    halves = {px: parts(px) for px in sizes()}
    judge = train_judge([tr for tr, _, _ in halves.values() if tr is not None])
    judge.save()
    rules = Thresholds()
    committed: dict[str, Any] = {
        "written_by": "python benchmarks/evaluator_error.py measure",
        "set": {},
        "judges": {"rules": {}, "learned": {}},
    }
    for px, (train, held, how) in halves.items():
        about = {k: v for k, v in (train or held).meta().items() if k != "indices"}
        held_about = {k: v for k, v in held.meta().items() if k != "indices"}
        result: dict[str, Any] = {
            "set": {**about, "train": len(train or ()), "held_out": len(held), "held_out_is": how,
                    "held_out_set": held_about},
            "rules": measure_error(held, lambda im: detect(im, rules)),
            "learned": measure_error(held, judge.read),
        }
        if train is not None:
            result["rules_on_training_set"] = measure_error(train, lambda im: detect(im, rules))
            result["learned_on_training_set"] = measure_error(train, judge.read)
        (RESULTS / f"error-{px}.json").write_text(json.dumps(result, indent=1) + "\n")
        held_file = set_path(px, held_out=True)
        committed["set"][str(px)] = {
            **({"file": str(set_path(px).relative_to(ROOT))} if train is not None else {}),
            "held_out_file": str((held_file if held_file.is_file() else set_path(px)).relative_to(ROOT)),
            **result["set"],
        }
        committed["judges"]["rules"][str(px)] = {
            "error": result["rules"]["error"],
            "checks": result["rules"]["checks"],
            "thresholds": dataclasses.asdict(rules),
        }
        committed["judges"]["learned"][str(px)] = {
            "error": result["learned"]["error"],
            "checks": result["learned"]["checks"],
        }
        print(table(px, result))
    MEASURED_ERROR.write_text(json.dumps(committed, indent=1) + "\n")
    print(f"wrote {MEASURED_ERROR.relative_to(ROOT)} and {judges.WEIGHTS.relative_to(ROOT)}")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def table(px: int, result: dict[str, Any]) -> str:
    metrics = ["colour_accuracy", "shape_accuracy", "position_accuracy", "count_accuracy", "accuracy"]
    lines = [f"## {px} px: held-out ({result['set']['held_out_is']}), {result['rules']['checks']} checks", "",
             "| reader | part | colour | shape | cell | count | whole verdict |", "|---|---|---|---|---|---|---|"]
    for reader in ("rules", "learned"):
        for part, key in (("all checks", "error"), ("own scene (false rejections)", "false_rejection"),
                          ("altered (false acceptances)", "false_acceptance")):
            e = result[reader][key]
            lines.append(f"| {reader} | {part} | " + " | ".join(_pct(e[m]) for m in metrics) + " |")
    lines += ["", "| object | n | rules misread | learned misread |", "|---|---|---|---|"]
    for k, v in result["rules"]["objects_misread"].items():
        lv = result["learned"]["objects_misread"][k]
        lines.append(f"| {k} | {v['objects']} | {_pct(v['error'])} | {_pct(lv['error'])} |")
    return "\n".join(lines) + "\n"


def agree(args: argparse.Namespace) -> None:
    """Generate the run's own evaluation images once and read them with both readers."""
    from modiff import Pipeline
    from modiff_datasets.config import PromptAccuracySettings
    from modiff_datasets.evaluation.prompt_accuracy import PromptAccuracy, summarise, to_rgb_array

    pipeline = Pipeline.load(args.run, device="cpu", with_data=True)
    settings = pipeline.components.settings.components["evaluator"].params
    assert isinstance(settings, PromptAccuracySettings), "agree reads runs evaluated by prompt-accuracy"
    holdout = settings.holdout or list(getattr(pipeline.components.dataset, "holdout", ()) or ())
    evaluator = PromptAccuracy(settings, holdout=holdout)
    cases = evaluator.cases()
    images = [to_rgb_array(i) for i in pipeline.generate([c.prompt for c in cases], seed=settings.seed)]
    judge = judges.committed_judge()
    rules = [score(detect(im, evaluator.thresholds), c.objects) for c, im in zip(cases, images)]
    learned = [score(judge.read(im), c.objects) for c, im in zip(cases, images)]
    disagree = [c.prompt for c, r, j in zip(cases, rules, learned) if r.correct != j.correct]
    out = {
        "run": Path(args.run).name,
        "prompts": len(cases),
        "agreement": 1.0 - len(disagree) / len(cases),
        "disagreements": disagree,
        "rules": summarise(cases, rules),
        "learned": summarise(cases, learned),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"agreement-{images[0].shape[0]}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    keys = ["accuracy", "one_object_accuracy", "two_object_accuracy", "holdout_accuracy"]
    print(f"agreement {out['agreement']:.3f} over {len(cases)} prompts ({len(disagree)} disagree)")
    for k in keys:
        print(f"{k:22} rules {out['rules'][k]:.3f}  learned {out['learned'][k]:.3f}")
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="the known-answer set from a trained run")
    m.add_argument("--run", required=True)
    m.add_argument("--count", type=int, default=600, help="scenes drawn (before dropping uncertain ones)")
    m.add_argument("--seed", type=int, default=38)
    m.add_argument("--strength", type=float, default=DEFAULT_STRENGTH)
    m.add_argument("--held-out", action="store_true",
                   help="write the held-out set (known-answers-<px>-held-out.npz): measured on, never trained on")
    m.set_defaults(func=make)
    sub.add_parser("measure", help="train the judge, measure both readers").set_defaults(func=measure)
    a = sub.add_parser("agree", help="both readers on the run's own generated images")
    a.add_argument("--run", required=True)
    a.set_defaults(func=agree)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
