"""Segmentation, mask-to-image and inpainting through the core, on toy components."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from modiff.assembly import BuildContext
from modiff.errors import ModiffError
from modiff.pipeline import Pipeline
from modiff.runs import RunDir
from modiff.settings import load_settings, resolve
from modiff.tasks import (
    BUILTIN_TASKS,
    Task,
    inpaint,
    mask_context,
    mask_to_image,
    random_paint_masks,
    segment,
    segmentation_loss,
)
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.workflows import train_run

REGISTRY = plugin_registry(ToyPlugin())


@pytest.fixture(autouse=True)
def toys(use_registry):
    use_registry(REGISTRY)


def settings(task: str, **train: Any):
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["task"] = task
    data["train"].update(train)
    return resolve(load_settings(base=data, environ={}), REGISTRY)


def trained(tmp_path: Path, task: str, **train: Any) -> tuple[Pipeline, RunDir]:
    run = RunDir(tmp_path / task)
    train_run(settings(task, **train), run, progress=False)
    return Pipeline.load(run.path, with_data=True), run  # the tests take their inputs from the dataset


def test_image_context_channels_per_task() -> None:
    class FourClasses:
        image_size, num_classes = 8, 4

    class FourLatents:
        latent_channels, downscale = 4, 1

    context = BuildContext(dataset=FourClasses(), encoder=FourLatents())  # type: ignore[arg-type]
    channels = {task.name: task.image_context_channels(context) for task in BUILTIN_TASKS}
    assert channels == {"text-to-image": 0, "mask-to-image": 4, "inpainting": 5, "segmentation": 0}


def test_mask_context_is_a_one_hot_partition() -> None:
    masks = torch.randint(0, 4, (2, 16, 16))
    ctx = mask_context(masks, 4, 8)
    assert ctx.shape == (2, 4, 8, 8)
    torch.testing.assert_close(ctx.sum(1), torch.ones(2, 8, 8))


def test_segmentation_loss_is_small_for_the_right_answer() -> None:
    masks = torch.randint(0, 3, (2, 8, 8))
    right = torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2).float() * 20
    wrong = right.roll(1, dims=1)
    assert segmentation_loss(right, masks, 3) < 0.05 < segmentation_loss(wrong, masks, 3)


def test_paint_masks_are_rectangles_within_bounds() -> None:
    m = random_paint_masks(16, 12, torch.Generator().manual_seed(0))
    assert m.shape == (16, 1, 12, 12) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert bool((m.flatten(1).sum(1) > 0).all())


@pytest.mark.slow
def test_segmentation_task_trains_and_segments(tmp_path: Path) -> None:
    pipe, run = trained(tmp_path, "segmentation", steps=60, lr=1e-2, log_every=10, checkpoint_every=100)
    losses = [m["loss"] for m in run.read_metrics() if m["stage"] == "denoiser"]
    assert losses[-1] < losses[0]
    ds = pipe.components.dataset
    images = torch.stack([ds[i].image for i in range(4)])
    masks = segment(pipe, images)
    assert masks.shape == (4, 8, 8) and masks.dtype == torch.int64
    with pytest.raises(ModiffError, match="segmentation needs a run trained with"):
        segment(trained(tmp_path, "text-to-image")[0], images)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["mask-to-image", "inpainting"])
def test_image_context_tasks_learn(tmp_path: Path, task: str) -> None:
    """The denoising loss with a map or a masked image as context falls."""
    _, run = trained(tmp_path, task, steps=80, lr=1e-2, log_every=10, checkpoint_every=100)
    losses = [m["loss"] for m in run.read_metrics() if m["stage"] == "denoiser"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_mask_to_image_generates_from_a_map(tmp_path: Path) -> None:
    pipe, _ = trained(tmp_path, "mask-to-image")
    assert pipe.components.denoiser.conv_in.in_channels == 3 + 2  # latent + one channel per class
    masks = torch.stack([pipe.components.dataset[i].mask for i in range(2)])
    out = mask_to_image(pipe, ["", "a red square"], masks, seed=0)
    assert out.shape == (2, 3, 8, 8)


def test_trained_inpainting_changes_only_the_masked_region(tmp_path: Path) -> None:
    pipe, _ = trained(tmp_path, "inpainting")
    assert pipe.components.denoiser.conv_in.in_channels == 3 + 1 + 3  # SD layout: x_t, mask, masked latent
    images = torch.stack([pipe.components.dataset[i].image for i in range(2)])
    paint = torch.zeros(2, 1, 8, 8)
    paint[:, :, 2:6, 2:6] = 1
    out = inpaint(pipe, ["a red square", "a blue square"], images, paint, seed=0)
    torch.testing.assert_close(out * (1 - paint), images * (1 - paint), rtol=0, atol=0)
    assert not torch.equal(out, images)


def test_training_free_inpainting_with_a_text_to_image_run(tmp_path: Path) -> None:
    pipe, _ = trained(tmp_path, "text-to-image")
    images = torch.stack([pipe.components.dataset[i].image for i in range(3)])
    paint = torch.zeros(3, 8, 8)
    paint[:, 4:, :] = 1
    out = inpaint(pipe, ["a green square"] * 3, images, paint, seed=1, steps=4)
    keep = (1 - paint)[:, None]
    torch.testing.assert_close(out * keep, images * keep, rtol=0, atol=0)
    again = inpaint(pipe, ["a green square"] * 3, images, paint, seed=1, steps=4)
    assert torch.equal(out, again)
    with pytest.raises(ModiffError, match="trained inpainting needs"):
        inpaint(pipe, ["x"], images[:1], paint[:1], method="trained")


def test_cli_segment_and_generate_with_mask_and_image(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from modiff.cli import main
    from modiff.images import to_pil

    seg_pipe, seg_run = trained(tmp_path, "segmentation")
    image = to_pil(seg_pipe.components.dataset[0].image[None])[0]
    image.save(tmp_path / "in.png")
    assert main(["segment", str(seg_run.path), str(tmp_path / "in.png"), "--out", str(tmp_path / "seg")]) == 0
    assert Image.open(tmp_path / "seg" / "in-segmented.png").size == (8, 8)
    assert Image.open(tmp_path / "seg" / "in-mask.png").mode == "L"

    _, m2i = trained(tmp_path, "mask-to-image")
    mask = Image.fromarray((seg_pipe.components.dataset[0].mask.numpy()).astype("uint8"), "L")
    mask.save(tmp_path / "mask.png")
    assert (
        main(
            [
                "generate",
                str(m2i.path),
                "a red square",
                "--mask",
                str(tmp_path / "mask.png"),
                "--out",
                str(tmp_path / "m.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "m.png").is_file()

    _, t2i = trained(tmp_path, "text-to-image")
    assert (
        main(
            [
                "generate",
                str(t2i.path),
                "a blue square",
                "--image",
                str(tmp_path / "in.png"),
                "--mask",
                str(tmp_path / "mask.png"),
                "--out",
                str(tmp_path / "i.png"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["generate", str(t2i.path), "x", "--strength", "0.5"]) == 2
    assert "--strength needs --image" in capsys.readouterr().err


import modiff  # noqa: E402  (the public API a plugin's task uses)


class GreyToColour(Task):
    """A task written in a test, as a plugin would: colour a grey image.

    Its image context is the image's brightness at the latent size (one
    channel), and its loss is its own (the noise prediction error, weighted
    towards the bright, coloured pixels). No core module knows it.
    """

    name = "grey-to-colour"
    description = "colour a grey image"

    def image_context_channels(self, context: Any) -> int:
        return 1

    def training_image_context(
        self, components: Any, batch: Any, generator: torch.Generator, share: slice
    ) -> torch.Tensor:
        return grey(batch.images, components.context.latent_size)

    def training_loss(self, components: Any, *, latents: Any, text: Any, condition_dropout: float, world: Any) -> Any:
        def loss(batch: Any, indices: Any, g: torch.Generator) -> torch.Tensor:
            x0 = latents(batch.images, indices, modiff.TrainingStep(g))
            t = components.scheduler.sample_timesteps(len(x0), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            context = self.training_image_context(components, batch, g, slice(None))
            cond = components.conditioner.condition(text(batch.captions, indices), image_context=context)
            pred = components.denoiser(components.scheduler.add_noise(x0, noise, t), t.float(), cond)
            weight = 1 + context  # brighter latent cells count more
            return (weight * (pred - noise) ** 2).mean()

        return loss

    def write_samples(self, pipeline: Any, prompts: Any, path: Path, **kwargs: Any) -> Path:
        from modiff.grids import save_labelled
        from modiff.images import to_pil

        images = torch.stack([pipeline.components.dataset[i].image for i in range(2)])
        return save_labelled(to_pil(colour(pipeline, images)), ["coloured"] * 2, path)


def grey(images: torch.Tensor, size: int) -> torch.Tensor:
    brightness = images.mean(1, keepdim=True)
    return torch.nn.functional.adaptive_avg_pool2d(brightness, size)


def colour(pipeline: Pipeline, images: torch.Tensor) -> torch.Tensor:
    context = grey(images, pipeline.components.context.latent_size)
    latents = pipeline.generate_latents(["a red square"] * len(images), image_context=context, steps=3)
    return pipeline.decode(latents)


class GreyToColourPlugin:
    @staticmethod
    def register_tasks(register: Any) -> None:
        register(GreyToColour())


def test_a_task_is_one_class_registered_by_a_plugin(tmp_path: Path, use_registry, capsys) -> None:
    import modiff
    from modiff.cli import main
    from modiff.toml_io import dumps

    plugin = GreyToColourPlugin()
    plugin.register_tasks = modiff.hookimpl(plugin.register_tasks)  # type: ignore[method-assign]
    registry = use_registry(plugin_registry(ToyPlugin(), plugin))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"].update(task="grey-to-colour", runs_dir=str(tmp_path / "runs"), name="grey")
    data["train"].update(steps=6)
    path = tmp_path / "grey.toml"
    path.write_text(dumps(data))
    assert main(["train", str(path), "--quiet"]) == 0
    assert "samples in" in capsys.readouterr().out
    pipe = Pipeline.load(tmp_path / "runs" / "grey", registry=registry, with_data=True)
    assert isinstance(pipe.task, GreyToColour)
    assert pipe.components.denoiser.conv_in.in_channels == 3 + 1, "the task's one context channel reached the denoiser"
    images = torch.stack([pipe.components.dataset[i].image for i in range(2)])
    out = colour(pipe, images)
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
    losses = [m["loss"] for m in RunDir(tmp_path / "runs" / "grey").read_metrics() if m["stage"] == "denoiser"]
    assert len(losses) == 6 and all(v == v for v in losses)
    data["run"]["task"] = "grey-to-colur"
    path.write_text(dumps(data))
    assert main(["train", str(path)]) == 2
    assert "task = 'grey-to-colur'" in capsys.readouterr().err
