"""The prompt-accuracy evaluator, with stand-in pipelines whose answers are known."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

import modiff
from modiff.testing import build_one
from modiff.testing.contracts import EvaluatorContract
from modiff_datasets.config import PromptAccuracySettings, ShapesSettings
from modiff_datasets.evaluation import PromptAccuracy
from modiff_datasets.shapes import PAIRS, evaluation_prompts, parse
from modiff_datasets.shapes.dataset import ShapesDataset
from modiff_datasets.testing import BlankPipeline, TruthPipeline, next_colour, next_shape

ATTRIBUTES = ("accuracy", "colour_accuracy", "shape_accuracy", "position_accuracy", "count_accuracy")


class TestPromptAccuracyContract(EvaluatorContract):
    plugin = "prompt-accuracy"
    settings = {"num_prompts": 24, "holdout": ["yellow triangle"]}

    def pipeline(self) -> Any:
        return TruthPipeline(32)

    def prompts(self) -> list[str]:
        return ["a red circle in the top left", "blue square, center; green triangle, bottom right"]


class TestPromptAccuracyBlankContract(TestPromptAccuracyContract):
    def pipeline(self) -> Any:
        return BlankPipeline(32)


def _evaluator(**settings: Any) -> PromptAccuracy:
    s = PromptAccuracySettings(**{"num_prompts": 60, **settings})
    return PromptAccuracy(s, holdout=s.holdout or ())


@pytest.mark.parametrize("n", [32, 64, 128])
def test_ground_truth_pipeline_scores_one(n: int) -> None:
    result = _evaluator(holdout=["yellow triangle", "cyan circle"]).evaluate(TruthPipeline(n))
    for key in (*ATTRIBUTES, "object_accuracy", "one_object_accuracy", "two_object_accuracy", "holdout_accuracy"):
        assert result[key] == 1.0, key
    assert result["num_prompts"] == 60 == result["num_one_object"] + result["num_two_object"]
    assert result["num_two_object"] == 30 and result["num_holdout"] >= 12
    assert len(result["per_prompt"]) == 60 and all(p["correct"] for p in result["per_prompt"])


def test_blank_pipeline_scores_zero() -> None:
    result = _evaluator().evaluate(BlankPipeline(32))
    for key in (*ATTRIBUTES, "object_accuracy", "one_object_accuracy", "two_object_accuracy"):
        assert result[key] == 0.0, key
    assert result["holdout_accuracy"] is None and result["num_holdout"] == 0


def test_per_attribute_numbers_separate_the_mistakes() -> None:
    wrong_colour = TruthPipeline(32, edit=lambda objs: [replace(o, colour=next_colour(o.colour)) for o in objs])
    r = _evaluator().evaluate(wrong_colour)
    assert r["accuracy"] == r["colour_accuracy"] == 0.0
    assert r["shape_accuracy"] == r["position_accuracy"] == r["count_accuracy"] == 1.0

    wrong_shape = TruthPipeline(32, edit=lambda objs: [replace(o, shape=next_shape(o.shape)) for o in objs])
    r = _evaluator().evaluate(wrong_shape)
    assert r["shape_accuracy"] == 0.0 and r["colour_accuracy"] == 1.0 and r["count_accuracy"] == 1.0

    only_first = TruthPipeline(32, edit=lambda objs: objs[:1])  # drops the second object
    r = _evaluator().evaluate(only_first)
    assert r["one_object_accuracy"] == 1.0 and r["two_object_accuracy"] == 0.0
    assert r["two_object_count_accuracy"] == 0.0 and r["accuracy"] == 0.5
    assert r["object_accuracy"] == pytest.approx((30 + 30) / (30 + 60))


def test_prompt_list_is_deterministic_and_covers_holdout() -> None:
    held = ["yellow triangle", "red square", "blue circle", "green square"]
    a = evaluation_prompts(300, seed=0, holdout=held)
    assert a == evaluation_prompts(300, seed=0, holdout=held)
    assert a != evaluation_prompts(300, seed=1, holdout=held)
    assert sum(c.num_objects == 2 for c in a) == 150
    for pair in held:
        with_pair = [c for c in a if any(o.pair == pair for o in c.objects)]
        assert len(with_pair) >= 15 and any(c.num_objects == 1 for c in with_pair)
    assert all(c.holdout == any(o.pair in held for o in c.objects) for c in a)
    # prompts are readable back into exactly their objects, and two objects never share a cell
    for c in a:
        truth = [(o.colour, o.shape, o.cell) for o in c.objects]
        assert [(o.colour, o.shape, o.cell) for o in parse(c.prompt)] == truth
        assert len({o.cell for o in c.objects}) == c.num_objects
    # a tiny list still names every held-out pair
    few = evaluation_prompts(5, holdout=held)
    assert {o.pair for c in few for o in c.objects} >= set(held)
    everything = {o.pair for c in evaluation_prompts(300) for o in c.objects}
    assert everything == set(PAIRS)


def test_given_prompts_are_parsed_and_bad_ones_reported() -> None:
    ev = _evaluator(holdout=["red circle"])
    r = ev.evaluate(TruthPipeline(32), prompts=["a red circle in the top left", "a blue square"])
    assert r["accuracy"] == 1.0 and r["num_prompts"] == 2 and r["num_holdout"] == 1
    with pytest.raises(ValueError, match="a purple dog"):
        ev.evaluate(TruthPipeline(32), prompts=["a red circle", "a purple dog"])


def test_generation_settings_are_passed_through() -> None:
    pipe = TruthPipeline(32)
    _evaluator(seed=7, steps=12, guidance=3.5, batch_size=16, num_prompts=5).evaluate(pipe)
    assert pipe.calls == [{"n": 5, "seed": 7, "steps": 12, "guidance": 3.5, "batch_size": 16}]
    pipe = TruthPipeline(32)
    _evaluator(num_prompts=3).evaluate(pipe)
    assert pipe.calls == [{"n": 3, "seed": 0, "steps": None, "guidance": None, "batch_size": None}]


def test_holdout_comes_from_the_shapes_dataset() -> None:
    dataset = ShapesDataset(ShapesSettings(size=10, holdout=["purple triangle"]))
    ctx = modiff.BuildContext(dataset=dataset)
    ev = build_one("evaluator", "prompt-accuracy", {"num_prompts": 20}, context=ctx)
    assert ev.holdout == ("purple triangle",)
    own = build_one("evaluator", "prompt-accuracy", {"holdout": ["red circle"]}, context=ctx)
    assert own.holdout == ("red circle",)
    assert build_one("evaluator", "prompt-accuracy", {}).holdout == ()
    r = ev.evaluate(TruthPipeline(32))
    assert r["num_holdout"] >= 4 and r["holdout_accuracy"] == 1.0


def test_settings_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="unknown colour 'pink'"):
        PromptAccuracySettings(holdout=["pink circle"])
    with pytest.raises(ValueError, match="triangle_below"):
        PromptAccuracySettings(triangle_below=0.95, square_from=0.9)


def test_per_item_outcomes_reproduce_every_accuracy() -> None:
    """`per_item` is the per-prompt form of each number (what ablation intervals resample)."""
    from modiff import stats

    only_first = TruthPipeline(32, edit=lambda objs: objs[:1])
    result = _evaluator(holdout=["yellow triangle"]).evaluate(only_first)
    per_item = result["per_item"]
    assert per_item["ids"] == [p["prompt"] for p in result["per_prompt"]]
    accuracies = [k for k, v in result.items() if k.endswith("accuracy")]
    assert set(per_item["metrics"]) == set(accuracies) and len(accuracies) >= 18
    for key in accuracies:
        items = stats.seed_items(0, per_item["ids"], per_item["metrics"][key])
        if result[key] is None:
            assert math.isnan(stats.point([items])), key
        else:
            assert stats.point([items]) == pytest.approx(result[key]), key
    one = per_item["metrics"]["one_object_accuracy"]
    assert all((v is None) == (len(p["objects"]) == 2) for v, p in zip(one, result["per_prompt"]))
