"""The digits dataset and the digit-accuracy evaluator: real data, honest captions,
an evaluator that separates right, wrong and blank digits, and use from a settings file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import modiff
import modiff_digits
from modiff.testing import build_one, plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff_digits.data import TEMPLATES, WORDS, caption, parse_digit, real_digits, split, to_8x8
from modiff_digits.testing import BlankPipeline, TruthPipeline

REGISTRY = plugin_registry(modiff_digits)


def dataset(**s: Any) -> Any:
    return build_one("data", "digits", s, registry_=REGISTRY)


def evaluator(**s: Any) -> Any:
    return build_one("evaluator", "digit-accuracy", s, registry_=REGISTRY)


def test_the_real_digits_and_a_stratified_split() -> None:
    images, labels = real_digits()
    assert images.shape == (1797, 8, 8) and int(images.max()) == 16 and int(images.min()) == 0
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    train, holdout = split(labels, 0.2, seed=0)
    assert len(np.intersect1d(train, holdout)) == 0 and len(train) + len(holdout) == 1797
    share = np.bincount(labels[holdout], minlength=10) / np.bincount(labels)
    assert np.allclose(share, 0.2, atol=0.01), share
    other, _ = split(labels, 0.2, seed=1)
    assert not np.array_equal(train, other), "the seed chooses the split"
    a, b = dataset(split="train"), dataset(split="holdout")
    assert len(a) + len(b) == 1797 and len(dataset(split="all")) == 1797


def test_captions_name_the_digit_shown() -> None:
    d = dataset(image_size=16)
    assert len({d.caption(i) for i in range(200)} & {caption(d.label(i), t) for i in range(200) for t in range(6)}) > 10
    for i in range(0, len(d), 37):
        assert parse_digit(d[i].caption) == d.label(i)
    words = " ".join(d.captions())
    assert "a handwritten seven" in words and "the digit 7" in words


@pytest.mark.parametrize("size", [16, 32, 64])
def test_images_are_the_digit_upscaled(size: int) -> None:
    d = dataset(image_size=size, split="all")
    images, _ = real_digits()
    example = d[5]
    assert example.image.shape == (3, size, size)
    assert torch.equal(example.image[0], example.image[1]) and torch.equal(example.image[1], example.image[2])
    # averaging the upscaled image back down to 8x8 gives the original ink, nearly
    back = to_8x8(example.image[None])[0].reshape(8, 8)
    assert np.abs(back - images[5]).mean() < 1.5


def test_bad_settings_are_clear() -> None:
    with pytest.raises(ValidationError, match="image_size"):
        modiff_digits.DigitsSettings(image_size=48)
    with pytest.raises(modiff.ModiffError, match="split 'holdout' is empty"):
        dataset(split="holdout", holdout_fraction=0.0)


@settings(max_examples=40, deadline=None)
@given(digit=st.integers(0, 9), template=st.integers(0, len(TEMPLATES) - 1))
def test_every_caption_parses_back_to_its_digit(digit: int, template: int) -> None:
    assert parse_digit(caption(digit, template)) == digit


@pytest.mark.parametrize(
    "prompt", ["", "a handwritten digit", "seventeen", "the number 17", "a seven and a one", "someone"]
)
def test_prompts_that_name_no_single_digit(prompt: str) -> None:
    assert parse_digit(prompt) is None


def test_right_digits_score_high_wrong_and_blank_ones_low() -> None:
    ev = evaluator(samples_per_digit=5)
    right = ev.evaluate(TruthPipeline(32))
    wrong = ev.evaluate(TruthPipeline(32, shift=1))
    blank = ev.evaluate(BlankPipeline(32))
    assert right["classifier_accuracy"] > 0.93
    assert right["accuracy"] >= 0.9 and right["num_images"] == 50
    assert sorted(right["per_digit"]) == [str(d) for d in range(10)]
    assert all(right[f"accuracy_{d}"] == right["per_digit"][str(d)] for d in range(10))
    assert right["mean_confidence"] > 0.7
    assert wrong["accuracy"] <= 0.1 and blank["accuracy"] <= 0.2
    assert blank["mean_confidence"] < 0.5


@pytest.mark.parametrize("size", [16, 64])
def test_any_image_size(size: int) -> None:
    result = evaluator(samples_per_digit=3).evaluate(TruthPipeline(size))
    assert result["accuracy"] >= 0.85, result


def test_prompts_and_options_reach_the_pipeline() -> None:
    pipeline = TruthPipeline(32)
    ev = evaluator(steps=7, guidance=2.5, seed=3, batch_size=4)
    result = ev.evaluate(pipeline, prompts=["the digit 4", "a handwritten nine", "a cat"])
    assert result["num_images"] == 2 and result["num_unparsed"] == 1
    assert set(result["per_digit"]) == {"4", "9"}
    assert pipeline.calls == [{"n": 2, "seed": 3, "steps": 7, "guidance": 2.5, "batch_size": 4}]
    with pytest.raises(modiff.ModiffError, match="names exactly one digit"):
        ev.evaluate(pipeline, prompts=["a cat", "a dog"])
    prompts = ev.default_prompts()
    assert prompts[:4] == ["a handwritten zero"] * 4 and prompts[-1] == f"a handwritten {WORDS[9]}"


def test_trains_and_evaluates_from_a_settings_file(tmp_path: Path, use_registry: Any) -> None:
    """``[data] plugin = "digits"`` with ``[evaluator] plugin = "digit-accuracy"`` and toy
    components for the rest: the core trains on real digits and the evaluator scores the run."""
    from modiff.runs import RunDir
    from modiff.workflows import evaluate_run, train_run

    registry = use_registry(plugin_registry(ToyPlugin(), modiff_digits))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["data"] = {"plugin": "digits", "image_size": 16}
    data["evaluator"] = {"plugin": "digit-accuracy", "samples_per_digit": 1, "steps": 2}
    data["sample"]["prompts"] = ["a handwritten three", "the digit 8"]
    resolved = modiff.resolve(modiff.load_settings(base=data, environ={}), registry)
    pipeline = train_run(resolved, RunDir(tmp_path / "run"), progress=False)
    assert len(pipeline.components.dataset) == len(dataset(split="train")) == 1438
    result = evaluate_run(pipeline)
    assert result["num_images"] == 10 and 0.0 <= result["accuracy"] <= 1.0
    assert result["classifier_accuracy"] > 0.9
