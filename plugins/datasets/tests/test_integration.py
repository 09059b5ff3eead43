"""The datasets and the evaluator inside the core's assembly and pipeline
(toy components for everything else, so it runs in a second)."""

from __future__ import annotations

import json
from typing import Any

import modiff
from modiff.pipeline import Pipeline
from modiff.settings import load_settings, resolve
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin


def _components(**tables: Any) -> Any:
    data = json.loads(json.dumps(TOY_SETTINGS))
    data.update(tables)
    registry = plugin_registry(ToyPlugin(), entry_points=True)
    return modiff.build(resolve(load_settings(base=data, environ={}), registry), device="cpu")


def test_shapes_and_prompt_accuracy_in_a_pipeline() -> None:
    c = _components(
        data={"plugin": "shapes", "size": 16, "image_size": 32, "max_objects": 2, "holdout": ["cyan square"]},
        evaluator={"plugin": "prompt-accuracy", "num_prompts": 6, "steps": 2},
    )
    assert c.context.image_size == 32 and c.context.num_classes == 4
    assert c.evaluator.holdout == ("cyan square",), "the evaluator follows the run's dataset"
    pipe = Pipeline(c)
    result = c.evaluator.evaluate(pipe)
    assert result["num_prompts"] == 6 and result["num_holdout"] >= 1
    assert 0.0 <= result["accuracy"] <= 1.0
    assert len(c.evaluator.last_images) == 6 and c.evaluator.last_images[0].size == (32, 32)


def test_image_folder_in_the_assembly(tmp_path: Any) -> None:
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (12, 10), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(f"picture {i}")
    c = _components(data={"plugin": "image-folder", "root": str(tmp_path), "image_size": 8})
    assert c.context.image_size == 8 and c.dataset[2].caption == "picture 2"
