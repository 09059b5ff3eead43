"""Captions and evaluation prompts that name no place ("a red circle"): the
world's ``unplaced`` share and the evaluator's ``unplaced_fraction``."""

from __future__ import annotations

import pytest

from modiff_datasets.config import PromptAccuracySettings, ShapesSettings
from modiff_datasets.evaluation import PromptAccuracy
from modiff_datasets.evaluation.check import detect, score
from modiff_datasets.shapes import SceneSampler, evaluation_prompts, parse, render
from modiff_datasets.testing import BlankPipeline, TruthPipeline


@pytest.mark.parametrize("share", [0.25, 0.6])
def test_the_share_of_captions_without_a_place_is_the_one_asked(share: float) -> None:
    sampler = SceneSampler(seed=3, max_objects=2, unplaced=share)
    captions = [sampler.caption(i) for i in range(2000)]
    unplaced = [all(o.cell is None for o in parse(c)) for c in captions]
    placed = [all(o.cell is not None for o in parse(c)) for c in captions]
    assert all(a != b for a, b in zip(unplaced, placed))  # a caption names every place or none
    assert sum(unplaced) / len(captions) == pytest.approx(share, abs=0.03)
    assert [sampler.placed(i) for i in range(2000)] == placed


def test_leaving_the_place_out_changes_captions_only() -> None:
    plain, unplaced = SceneSampler(seed=1, max_objects=2), SceneSampler(seed=1, max_objects=2, unplaced=0.5)
    changed = 0
    for i in range(300):
        a, b = plain.scene(i), unplaced.scene(i)
        assert a.objects == b.objects and a.template == b.template
        if a.caption != b.caption:
            changed += 1
            # the same objects in the same order, with their sizes as said, and no place
            assert [(o.colour, o.shape, o.size) for o in parse(a.caption)] == [
                (o.colour, o.shape, o.size) for o in parse(b.caption)
            ]
    assert 100 < changed < 200


@pytest.mark.parametrize("image_size", [32, 64])
def test_each_scene_satisfies_its_caption_without_a_place(image_size: int) -> None:
    sampler = SceneSampler(seed=0, image_size=image_size, max_objects=2, unplaced=1.0)
    for i in range(150):
        scene = sampler.scene(i)
        rgb, _ = render(scene.objects, image_size)
        named = parse(scene.caption)
        assert all(o.cell is None for o in named)
        assert score(detect(rgb), named).correct, scene.caption


def test_the_dataset_takes_the_share_from_its_settings() -> None:
    from modiff_datasets.shapes.dataset import ShapesDataset

    data = ShapesDataset(ShapesSettings(size=400, max_objects=2, unplaced=0.5))
    share = sum(all(o.cell is None for o in parse(c)) for c in data.captions()) / 400
    assert share == pytest.approx(0.5, abs=0.08)
    assert all(o.cell is None for o in parse(data[next(i for i in range(400) if not data.sampler.placed(i))].caption))


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_a_share_outside_zero_to_one_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="unplaced"):
        ShapesSettings(unplaced=bad)
    with pytest.raises(ValueError, match="unplaced"):
        SceneSampler(unplaced=bad)
    with pytest.raises(ValueError, match="unplaced_fraction"):
        evaluation_prompts(10, unplaced_fraction=bad)


def test_evaluation_prompts_without_a_place_leave_the_others_as_they_were() -> None:
    held = ["yellow triangle", "purple circle"]
    before = evaluation_prompts(300, holdout=held)
    after = evaluation_prompts(300, holdout=held, unplaced_fraction=0.2)
    unplaced = [c for c in after if c.unplaced]
    assert 45 <= len(unplaced) <= 75
    assert any(c.num_objects == 2 for c in unplaced) and any(c.holdout for c in unplaced)
    for old, new in zip(before, after):
        assert not old.unplaced
        if new.unplaced:
            assert [(o.colour, o.shape, o.size) for o in old.objects] == [
                (o.colour, o.shape, o.size) for o in new.objects
            ]
            assert [o.cell for o in parse(new.prompt)] == [None] * new.num_objects
        else:
            assert new == old


def test_the_evaluator_scores_prompts_without_a_place_on_a_line_of_their_own() -> None:
    settings = PromptAccuracySettings(num_prompts=60)
    assert settings.unplaced_fraction > 0  # measured by default, like held-out pairs
    evaluator = PromptAccuracy(settings)
    truth = evaluator.evaluate(TruthPipeline(32))
    assert truth["num_unplaced"] == sum(c.unplaced for c in evaluator.last_cases) > 5
    assert truth["unplaced_accuracy"] == truth["placed_accuracy"] == 1.0
    blank = evaluator.evaluate(BlankPipeline(32))
    assert blank["unplaced_accuracy"] == 0.0
    none = PromptAccuracy(PromptAccuracySettings(num_prompts=60, unplaced_fraction=0.0)).evaluate(TruthPipeline(32))
    assert none["num_unplaced"] == 0 and none["unplaced_accuracy"] is None and none["placed_accuracy"] == 1.0
