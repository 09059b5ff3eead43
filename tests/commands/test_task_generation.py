"""A task owns the inputs and outputs of a generation: `modiff generate` takes
its options from the run's task and writes what the task returns.

A plugin's task with an input of its own generates through the command
line with no core edit; a segmentation run generates class maps through the
same path; the PNG's parameters are the ones the sampler was given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from modiff.cli import main
from modiff.errors import ModiffError
from modiff.parameters import read
from modiff.pipeline import Pipeline
from modiff.tasks import BUILTIN_TASKS, Input, Task
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps

#: A plugin distribution, as `pip install` would leave it: the toy components and
#: a task of its own, "level-to-image", whose generation takes `--level`.
LEVEL_PLUGIN = """
import torch

import modiff
from modiff.tasks import Generated, Input, Output, Task
from modiff.testing.toys import ToyPlugin as _ToyPlugin

_plugin = _ToyPlugin()
register_datasets = _plugin.register_datasets
register_encoders = _plugin.register_encoders
register_text_embedders = _plugin.register_text_embedders
register_conditioners = _plugin.register_conditioners
register_denoisers = _plugin.register_denoisers
register_schedulers = _plugin.register_schedulers


class LevelToImage(Task):
    '''Images of a given brightness: the image context is one plane holding it.'''

    name = "level-to-image"
    description = "images of a given brightness"
    inputs = (Input("level", "number", "brightness, -1 (dark) to 1 (bright)", required=True),)
    outputs = (Output("images"), Output("masks", "-bright", "where the image is brighter than mid grey"))

    def image_context_channels(self, context):
        return 1

    def training_image_context(self, components, batch, generator, share):
        size = components.context.latent_size
        return batch.images.mean((1, 2, 3)).view(-1, 1, 1, 1).expand(-1, 1, size, size)

    def generate(self, pipeline, request):
        size = pipeline.components.context.latent_size
        context = torch.full((len(request.prompts), 1, size, size), float(request.inputs["level"]))
        latents = pipeline.generate_latents(
            list(request.prompts), seeds=list(request.seeds), image_context=context, **request.sampling.options()
        )
        images = pipeline.decode(latents)
        return Generated({"images": images, "masks": (images.mean(1) > 0).long()}, request.sampling)


@modiff.hookimpl
def register_tasks(register):
    register(LevelToImage())
"""


@pytest.fixture
def level_run(tmp_path: Path, fake_distribution, monkeypatch, use_registry) -> Path:
    """A run of the plugin's task, trained at a toy size; the plugin is only installed."""
    fake_distribution("fake-level", "fake_level", LEVEL_PLUGIN)
    monkeypatch.setenv("MODIFF_LOAD_PLUGINS", "fake_level")
    use_registry(plugin_registry(entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data.pop("evaluator")
    data["run"].update(task="level-to-image", name="level", runs_dir=str(tmp_path / "runs"))
    path = tmp_path / "level.toml"
    path.write_text(dumps(data))
    assert main(["train", str(path), "--quiet"]) == 0
    return tmp_path / "runs" / "level"


def test_a_plugins_task_generates_through_modiff_generate_with_its_own_option(
    level_run: Path, tmp_path: Path, capsys
) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "made"
    done = subprocess.run(
        [sys.executable, "-m", "modiff", "generate", str(level_run), "a red square", "--level", "0.5",
         "--seed", "3", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    image, mask = out / "p00-seed3.png", out / "p00-seed3-bright.png"
    assert read(image).seed == 3 and Image.open(mask).mode == "L" and (out / "grid.png").is_file()
    assert set(np.unique(np.asarray(Image.open(mask)))) <= {0, 1}
    bright = np.asarray(Image.open(image).convert("RGB"))

    assert read(image).inputs == (("level", "0.5"),), "the task's input is in the PNG"
    assert main(["generate", "--from", str(image), "--out", str(tmp_path / "again")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again" / "p00-seed3.png")), np.asarray(Image.open(image)))
    capsys.readouterr()
    assert main(["generate", str(level_run), "a red square", "--level", "-1", "--seed", "3",
                 "--out", str(tmp_path / "dark")]) == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "dark" / "p00-seed3.png")), bright), (
        "the task's input reached its generation")
    assert main(["generate", str(level_run), "a red square", "--out", str(tmp_path / "none")]) == 2
    assert "needs --level" in capsys.readouterr().err
    assert main(["generate", str(level_run), "a red square", "--mask", "m.png"]) == 2
    err = capsys.readouterr().err
    assert "--mask is not an option" in err and "'level-to-image'" in err and "--level" in err
    assert main(["generate", str(level_run), "--help"]) == 0
    assert "--level" in capsys.readouterr().out


def test_a_task_input_cannot_take_an_option_of_generate() -> None:
    with pytest.raises(ModiffError, match="input called 'seed' would clash"):
        Input("seed", "number", "a seed of its own")
    with pytest.raises(ModiffError, match="kinds: image, mask"):
        Input("colour", "colour", "not a kind")


@pytest.fixture
def segmentation_run(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin()))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data.pop("scheduler")  # as configs/segmentation.toml: a segmentation run has no noise schedule
    data["run"].update(task="segmentation", name="seg", runs_dir=str(tmp_path / "runs"))
    path = tmp_path / "seg.toml"
    path.write_text(dumps(data))
    assert main(["train", str(path), "--quiet"]) == 0
    return tmp_path / "runs" / "seg"


def test_a_segmentation_run_writes_class_maps_through_modiff_generate(
    segmentation_run: Path, tmp_path: Path, capsys
) -> None:
    picture = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(picture)
    out = tmp_path / "seg"
    assert main(["generate", str(segmentation_run), "--image", str(picture), "--out", str(out)]) == 0
    mask = Image.open(out / "in-mask.png")
    assert mask.mode == "L" and mask.size == (8, 8) and (out / "in-segmented.png").is_file()
    assert main(["segment", str(segmentation_run), str(picture), "--out", str(tmp_path / "again")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again" / "in-mask.png")), np.asarray(mask))

    capsys.readouterr()
    assert main(["generate", str(segmentation_run), "a prompt", "--image", str(picture)]) == 2
    err = capsys.readouterr().err
    assert "takes no prompt" in err and "--image" in err and "Traceback" not in err
    assert main(["generate", str(segmentation_run), "--image", str(picture), "--steps", "5"]) == 2
    assert "does not sample: --steps" in capsys.readouterr().err
    with pytest.raises(ModiffError, match="does not sample"):
        Pipeline.load(segmentation_run).generate_tensor(["x"])


@pytest.fixture
def toy_run(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin()))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    path = tmp_path / "toy.toml"
    path.write_text(dumps(data))
    assert main(["train", str(path), "--quiet"]) == 0
    return tmp_path / "runs" / "toy"


@pytest.mark.parametrize("strength", [None, "0.3"])
def test_the_png_records_the_parameters_the_sampler_was_given(
    toy_run: Path, tmp_path: Path, monkeypatch, strength: str | None
) -> None:
    given: list[dict[str, Any]] = []
    sample = Pipeline.generate_latents

    def spy(self: Pipeline, prompts: Any, **kwargs: Any) -> torch.Tensor:
        given.append(kwargs)
        return sample(self, prompts, **kwargs)

    monkeypatch.setattr(Pipeline, "generate_latents", spy)
    start = tmp_path / "start.png"
    Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(start)
    flags = ["--image", str(start)] + (["--strength", strength] if strength else [])
    assert main(["generate", str(toy_run), "a red square", "--out", str(tmp_path / "o"), *flags]) == 0
    made = read(tmp_path / "o" / "p00-seed0.png")
    (used,) = given
    assert (used["steps"], used["guidance"], used["strength"]) == (made.steps, made.guidance, made.strength)
    assert made.strength == (0.8 if strength is None else 0.3) and made.steps == TOY_SETTINGS["sample"]["steps"]


def test_tasks_say_whether_prompts_alone_make_images() -> None:
    able = {task.name: task.generates_from_prompts for task in BUILTIN_TASKS}
    assert able == {"text-to-image": True, "mask-to-image": False, "inpainting": False, "segmentation": False}

    class WithContext(Task):  # image context, but no input declared to give it
        name = "with-context"

        def image_context_channels(self, context: Any) -> int:
            return 1

    assert not WithContext().generates_from_prompts


class Prompted(Task):
    """A plugin's task that makes images from prompts alone, under a name of its own."""

    name = "prompted"
    description = "images from prompts, as a plugin names it"


class PromptedPlugin:
    @staticmethod
    def register_tasks(register: Any) -> None:
        register(Prompted())


def test_an_ablation_draws_a_comparison_grid_for_every_task_that_makes_images_from_prompts(
    tmp_path: Path, use_registry
) -> None:
    import modiff
    from modiff.ablation import read_ablation, run_ablation

    plugin = PromptedPlugin()
    plugin.register_tasks = modiff.hookimpl(plugin.register_tasks)  # type: ignore[method-assign]
    use_registry(plugin_registry(ToyPlugin(), plugin))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data.pop("evaluator")
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    (tmp_path / "base.toml").write_text(dumps(data))
    path = tmp_path / "abl.toml"
    path.write_text('base = "base.toml"\n[grid]\n"run.task" = ["text-to-image", "prompted", "segmentation"]\n')
    records = run_ablation(read_ablation(path), progress=False, log=lambda *_: None)
    assert [r["status"] for r in records] == ["done"] * 3, [r.get("error") for r in records]
    grids = {r["changes"]["run.task"]: "grid" in r for r in records}
    assert grids == {"text-to-image": True, "prompted": True, "segmentation": False}


def test_the_layers_below_the_tasks_hold_a_task_by_its_protocol(tmp_path: Path, use_registry) -> None:
    from modiff.protocols import TaskProtocol

    registry = use_registry(plugin_registry(ToyPlugin()))
    assert all(isinstance(task, TaskProtocol) for task in registry.tasks().values())
    assert sorted(registry.tasks()) == sorted(task.name for task in BUILTIN_TASKS)

    class Half:  # a task that says nothing of its generation
        name, description, head = "half", "", "denoise"

    assert not isinstance(Half(), TaskProtocol)


def test_the_shipped_segmentation_settings_at_a_tiny_size_generate_class_maps(
    tmp_path: Path, use_registry, capsys
) -> None:
    """configs/segmentation.toml has no [scheduler]: `modiff generate` on its run
    writes class maps, and a prompt is one clear line, not an AttributeError."""
    use_registry(plugin_registry(entry_points=True))
    settings = Path(__file__).resolve().parents[2] / "configs" / "segmentation.toml"
    tiny = ["--set", f'run.runs_dir="{tmp_path / "runs"}"', "--set", "data.image_size=24",
            "--set", "denoiser.channels=[8,8]", "--set", "denoiser.norm_num_groups=4",
            "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.checkpoint_every=2"]
    assert main(["train", str(settings), *tiny, "--quiet"]) == 0
    run = tmp_path / "runs" / "shapes-segmentation"
    picture = tmp_path / "shapes.png"
    Image.fromarray(np.zeros((24, 24, 3), dtype=np.uint8)).save(picture)
    capsys.readouterr()
    assert main(["generate", str(run), "a red circle"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "takes no prompt" in err and f"modiff generate {run} --image" in err
    assert main(["generate", str(run), "--image", str(picture), "--out", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "shapes-mask.png").size == (24, 24)


def test_from_gives_a_tasks_inputs_again(tmp_path: Path, use_registry) -> None:
    """A mask-to-image PNG records its map (`Input mask`), so `--from` makes it again."""
    use_registry(plugin_registry(ToyPlugin()))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"].update(task="mask-to-image", name="m2i", runs_dir=str(tmp_path / "runs"))
    (tmp_path / "m2i.toml").write_text(dumps(data))
    assert main(["train", str(tmp_path / "m2i.toml"), "--quiet"]) == 0
    layout = np.zeros((8, 8), dtype=np.uint8)
    layout[2:6, 2:6] = 1
    Image.fromarray(layout, "L").save(tmp_path / "map.png")
    run = tmp_path / "runs" / "m2i"
    assert main(["generate", str(run), "a red square", "--mask", str(tmp_path / "map.png"), "--seed", "4",
                 "--out", str(tmp_path / "first")]) == 0
    made = tmp_path / "first" / "p00-seed4.png"
    assert read(made).inputs == (("mask", str((tmp_path / "map.png").resolve())),)
    assert main(["generate", "--from", str(made), "--out", str(tmp_path / "again")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again" / "p00-seed4.png")), np.asarray(Image.open(made)))
    assert main(["generate", "--mask", str(tmp_path / "map.png"), "--seed", "4", str(run), "a red square",
                 "--out", str(tmp_path / "reordered")]) == 0, "a task's option before RUN lends RUN no value"
    reordered = np.asarray(Image.open(tmp_path / "reordered" / "p00-seed4.png"))
    assert np.array_equal(reordered, np.asarray(Image.open(made)))
    from modiff.images import to_pil
    from modiff.tasks import generate

    pipe = Pipeline.load(run)
    in_python = generate(pipe, ["a red square"], seed=4, mask=torch.from_numpy(layout.astype(np.int64)))
    assert np.array_equal(np.asarray(to_pil(in_python.outputs["images"])[0]), np.asarray(Image.open(made)))
    with pytest.raises(ModiffError, match="needs --mask"):
        generate(pipe, ["a red square"])
    other = np.ones((8, 8), dtype=np.uint8)
    Image.fromarray(other, "L").save(tmp_path / "other.png")
    assert main(["generate", "--from", str(made), "--mask", str(tmp_path / "other.png"),
                 "--out", str(tmp_path / "other")]) == 0
    assert read(tmp_path / "other" / "p00-seed4.png").inputs == (("mask", str((tmp_path / "other.png").resolve())),)
