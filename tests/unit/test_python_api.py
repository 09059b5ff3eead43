"""The Python API as a new user calls it: one prompt as a string, PIL images
for start images and masks, images that carry how they were made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modiff.cli import main
from modiff.files import atomic_save_tensors, read_tensors
from modiff.images import from_pil as pil_to_tensor
from modiff.images import to_pil
from modiff.parameters import read
from modiff.pipeline import Pipeline
from modiff.tasks import generate
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


@pytest.fixture
def run(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    data["train"]["steps"] = 10
    data["scheduler"] = {"plugin": "ddim", "num_train_timesteps": 100}
    path = tmp_path / "toy.toml"
    path.write_text(dumps(data))
    assert main(["train", str(path), "--quiet"]) == 0
    return tmp_path / "runs" / "toy"


def test_one_prompt_as_a_string_is_one_image(run: Path) -> None:
    pipe = Pipeline.load(run)
    (image,) = pipe.generate("a red square", seed=3, steps=3)
    (same,) = pipe.generate(["a red square"], seed=3, steps=3)
    assert np.array_equal(np.asarray(image), np.asarray(same))


def test_start_images_as_pil_or_tensors_give_the_same_images(run: Path) -> None:
    pipe = Pipeline.load(run)
    start = to_pil(torch.rand(1, 3, pipe.image_size, pipe.image_size) * 2 - 1)[0]
    prompts = ["a red square", "a blue square"]
    from_pil = pipe.generate(prompts, init_images=[start, start], strength=0.5, steps=4)
    from_one = pipe.generate(prompts, init_images=start, strength=0.5, steps=4)
    from_tensor = pipe.generate(prompts, init_images=pil_to_tensor(start), strength=0.5, steps=4)
    for a, b, c in zip(from_pil, from_one, from_tensor):
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(c))
    assert from_pil[0].parameters.strength == 0.5


def test_a_pil_image_and_mask_through_the_task_repaint_only_the_region(run: Path) -> None:
    pipe = Pipeline.load(run)
    size = pipe.image_size
    start = to_pil(torch.rand(1, 3, size, size) * 2 - 1)[0]
    region = Image.new("L", (size, size), 0)
    region.paste(255, (0, 0, size // 2, size))
    made = to_pil(generate(pipe, "a red square", image=start, mask=region, steps=3).outputs["images"])[0]
    kept, before = np.asarray(made)[:, size // 2 :], np.asarray(start)[:, size // 2 :]
    assert np.abs(kept.astype(int) - before.astype(int)).max() <= 1
    assert not np.array_equal(np.asarray(made)[:, : size // 2], np.asarray(start)[:, : size // 2])


def test_saved_images_carry_their_parameters_and_make_the_same_image_again(run: Path, tmp_path: Path) -> None:
    pipe = Pipeline.load(run)
    (image,) = pipe.generate("a green square", seed=42, steps=5, guidance=2.5, negative_prompt="a red square")
    assert "Seed: 42" in image.info["parameters"]
    image.save(tmp_path / "mine.png")
    params = read(tmp_path / "mine.png")
    assert (params.prompt, params.seed, params.steps, params.guidance, params.negative_prompt) == (
        "a green square", 42, 5, 2.5, "a red square")
    assert params.model_hash == pipe.model_hash and params.run == str(run.resolve())
    assert main(["generate", "--from", str(tmp_path / "mine.png"), "--out", str(tmp_path / "again")]) == 0
    again = Image.open(tmp_path / "again" / "p00-seed42.png")
    assert np.array_equal(np.asarray(again.convert("RGB")), np.asarray(image))


def test_the_model_hash_is_of_the_weights_not_the_settings(run: Path, tmp_path: Path, capsys) -> None:
    pipe = Pipeline.load(run)
    weights = pipe.run.weights("denoiser")
    before = pipe.model_hash
    assert Pipeline.load(run).model_hash == before  # the same weights, the same hash
    pipe.generate("a red square", steps=2)[0].save(tmp_path / "made.png")
    tensors, metadata = read_tensors(weights)
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1
    atomic_save_tensors(weights, tensors, {k: v for k, v in metadata.items() if not k.startswith("modiff.checksum")})
    assert Pipeline.load(run).model_hash != before
    capsys.readouterr()
    assert main(["generate", "--from", str(tmp_path / "made.png"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert "weights of" in capsys.readouterr().err  # the settings are the same: only the weights tell


# -- nothing a user made is overwritten -------------------------------------------------------------


def test_generate_without_out_writes_a_new_numbered_folder_each_call(run: Path, capsys) -> None:
    assert main(["generate", str(run), "a green square", "--seed", "7", "--steps", "2"]) == 0
    assert main(["generate", str(run), "a red square", "--seed", "7", "--steps", "2"]) == 0
    generated = run / "samples" / "generated"
    assert sorted(p.name for p in generated.iterdir()) == ["0001", "0002"]
    assert read(generated / "0001" / "p00-seed7.png").prompt == "a green square"
    assert read(generated / "0002" / "p00-seed7.png").prompt == "a red square"
    assert sorted(p.name for p in (generated / "0001").iterdir()) == ["grid.png", "p00-seed7.png"]


def test_numbered_folders_are_claimed_once_even_when_a_number_is_taken(tmp_path: Path) -> None:
    from modiff.files import numbered_folder

    (tmp_path / "0003").mkdir()
    (tmp_path / "notes").mkdir()
    assert numbered_folder(tmp_path).name == "0004"
    assert numbered_folder(tmp_path).name == "0005"


@pytest.mark.parametrize("out", ["folder", "grid.png"])
def test_out_naming_existing_files_is_refused_naming_the_file_and_the_flag(
    run: Path, tmp_path: Path, capsys, out: str
) -> None:
    target = tmp_path / "mine" / out
    assert main(["generate", str(run), "a green square", "--seed", "7", "--steps", "2", "--out", str(target)]) == 0
    folder = target if out == "folder" else target.parent
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()
    assert main(["generate", str(run), "a red square", "--seed", "7", "--steps", "2", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "exists already" in err and "--overwrite" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written
    assert main(["generate", str(run), "a red square", "--seed", "7", "--steps", "2", "--out", str(target),
                 "--overwrite"]) == 0
    assert read(folder / ("p00-seed7.png" if out == "folder" else "grid-p00-seed7.png")).prompt == "a red square"


def test_evaluate_with_other_prompts_or_sampler_writes_its_own_file_and_keeps_the_runs(
    run: Path, tmp_path: Path
) -> None:
    assert main(["evaluate", str(run)]) == 0
    own = (run / "evaluation.json").read_bytes()
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na blue square\n")
    assert main(["evaluate", str(run), "--prompts", str(prompts), "--scheduler", "euler"]) == 0
    assert (run / "evaluation.json").read_bytes() == own
    other = json.loads((run / "evaluation-prompts-p-sampler-euler.json").read_text())
    assert other["sampling"]["sampler"] == "euler" and other["sampling"]["prompts"] == str(prompts.resolve())
    assert other["sampling"]["steps"] >= 1 and "guidance" in other["sampling"]
    assert "sampler: euler" in (run / "evaluation-prompts-p-sampler-euler.md").read_text()


def test_the_sampling_record_of_a_run_that_does_not_sample_names_no_sampler(tmp_path: Path) -> None:
    from argparse import Namespace
    from types import SimpleNamespace

    from modiff.commands.evaluate import sampling_record

    evaluator = SimpleNamespace(name="iou")
    pipeline = SimpleNamespace(scheduler=None, components=SimpleNamespace(
        evaluator=None, settings=SimpleNamespace(components={"evaluator": evaluator})))
    args = Namespace(prompts=None, evaluator=None, scheduler=None)
    assert sampling_record(pipeline, args) == {  # type: ignore[arg-type]
        "sampler": None, "steps": None, "guidance": None, "prompts": None, "evaluator": "iou"}
