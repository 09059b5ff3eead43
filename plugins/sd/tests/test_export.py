"""``export-diffusers``: the run as a diffusers folder, loadable by diffusers, re-importable bit for bit."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import modiff
from _sd_tiny import CAPTIONS, assert_same_tensors, modiff_images, reference_images
from modiff.cli import main
from modiff.pipeline import Pipeline
from modiff.runs import RunDir
from modiff_sd.exporter import export_diffusers
from modiff_sd.importer import import_sd

diffusers = pytest.importorskip("diffusers", reason="diffusers is the reference")


@pytest.fixture(scope="module")
def exported(imported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_diffusers(imported, tmp_path_factory.mktemp("export") / "tiny-sd").path


def test_reimport_round_trips_exactly(imported: Path, exported: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    import_sd(exported, again)
    assert_same_tensors(imported, again)
    a = tomllib.loads((imported / "settings.toml").read_text())
    b = tomllib.loads((again / "settings.toml").read_text())
    for s in (a, b):
        s["text_embedder"].pop("pretrained")
        s["run"].pop("name")
        s["run"].pop("runs_dir")
    assert a == b


@pytest.mark.slow  # parity: diffusers loads the export
def test_diffusers_loads_the_export_and_generates_the_same_image(
    tiny_sd: tuple[Path, Any], imported: Path, exported: Path
) -> None:
    loaded = diffusers.StableDiffusionPipeline.from_pretrained(str(exported), safety_checker=None)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    prompts = [CAPTIONS[0]]
    theirs = reference_images(loaded, prompts, seed=21, steps=4, guidance=7.5)
    original = reference_images(tiny_sd[1], prompts, seed=21, steps=4, guidance=7.5)
    mine = modiff_images(Pipeline.load(imported, device="cpu"), prompts, seed=21, steps=4, guidance=7.5)
    assert torch.equal(theirs, original)  # the same weights and configuration as the pipeline imported
    assert float((mine - theirs).abs().max()) < 1e-3


def test_export_writes_diffusers_layout(exported: Path) -> None:
    index = json.loads((exported / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    vae = json.loads((exported / "vae" / "config.json").read_text())
    assert vae["scaling_factor"] == pytest.approx(0.18215)
    weights = load_file(str(exported / "vae" / "diffusion_pytorch_model.safetensors"))
    assert not any(k.startswith("latent_norm.") for k in weights)
    assert (exported / "tokenizer" / "tokenizer.json").is_file()


def _copy_run(imported: Path, tmp_path: Path) -> Path:
    run = tmp_path / "copy"
    shutil.copytree(imported, run)
    return run


def test_per_channel_latent_statistics_are_refused(imported: Path, tmp_path: Path) -> None:
    run = _copy_run(imported, tmp_path)
    path = RunDir(run).weights("encoder")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    tensors["latent_norm.scale"] = torch.tensor([0.2, 0.3, 0.4, 0.5])
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(modiff.ModiffError, match="scaling_factor"):
        export_diffusers(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_components_without_a_diffusers_equivalent_are_refused(imported: Path, tmp_path: Path) -> None:
    run = _copy_run(imported, tmp_path)
    settings = (run / "settings.toml").read_text()
    settings = settings.replace('plugin = "sd-cross-attention"', 'plugin = "cross-attention"\nprojection = false')
    (run / "settings.toml").write_text(settings)
    with pytest.raises(modiff.ModiffError, match=r"\[conditioner\] is 'cross-attention'"):
        export_diffusers(run, tmp_path / "out")


def test_commands(tiny_sd: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, out = tmp_path / "run", tmp_path / "export"
    assert main(["import-sd", str(tiny_sd[0]), str(run)]) == 0
    assert "imported" in capsys.readouterr().out
    assert main(["export-diffusers", str(run), str(out)]) == 0
    assert (out / "model_index.json").is_file()
    # A second export into the same folder is a user error (status 2), not a traceback.
    assert main(["export-diffusers", str(run), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export-diffusers", str(run), str(out), "--overwrite"]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["export-diffusers", str(run), str(mine), "--overwrite"]) == 2  # not a diffusers folder
    assert "not a diffusers folder" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
