"""Single-file checkpoints in the original (CompVis/LDM) layout.

The tiny pipeline's weights are written the way SD 1.x's releases store
them (one file, ``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.*``, plus training-only tensors), imported
without any configuration, and must generate diffusers' images.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import modiff
from _sd_tiny import CAPTIONS, LATENT, assert_same_tensors, modiff_images, reference_images
from modiff.pipeline import Pipeline
from modiff.runs import RunDir
from modiff_sd.importer import import_sd
from modiff_sd.layout import to_original_checkpoint

pytest.importorskip("diffusers", reason="diffusers is the reference")
pytestmark = pytest.mark.slow  # single files checked against diffusers' images


def original_checkpoint(pipe: Any) -> dict[str, torch.Tensor]:
    ckpt = to_original_checkpoint(pipe.unet.state_dict(), pipe.vae.state_dict(), pipe.text_encoder.state_dict())
    # What real SD 1.x files carry besides the weights: the training schedule, EMA bookkeeping.
    ckpt["alphas_cumprod"] = torch.linspace(0.999, 0.005, 1000)
    ckpt["model_ema.num_updates"] = torch.tensor(5)
    return {k: v.contiguous() for k, v in ckpt.items()}


@pytest.fixture(scope="module")
def single_file(tiny_sd: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("single") / "tiny-sd.safetensors"
    save_file(original_checkpoint(tiny_sd[1]), str(path))
    return path


@pytest.fixture(scope="module")
def single_run(tiny_sd: tuple[Path, Any], single_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "single"
    result = import_sd(single_file, run, tokenizer_dir=tiny_sd[0] / "tokenizer", image_size=LATENT * 8)
    assert any("model_ema" in n for n in result.notes)
    return run


def test_single_file_generates_diffusers_images(tiny_sd: tuple[Path, Any], single_run: Path) -> None:
    _, pipe = tiny_sd
    prompts = [CAPTIONS[0], CAPTIONS[3]]
    ref = reference_images(pipe, prompts, seed=11, steps=4, guidance=6.0)
    with pytest.warns(UserWarning, match="CLIP tokens"):  # the second prompt is cut to 12 tokens, on both sides
        mine = modiff_images(Pipeline.load(single_run, device="cpu"), prompts, seed=11, steps=4, guidance=6.0)
    assert float((mine - ref).abs().max()) < 1e-3


def test_shapes_give_the_configuration_a_folder_gives(imported: Path, single_run: Path) -> None:
    """Read off the shapes with SD 1.x's conventions, the single file describes the same model
    as the diffusers folder's config files: same settings, same tensors bit for bit."""
    a = tomllib.loads((imported / "settings.toml").read_text())
    b = tomllib.loads((single_run / "settings.toml").read_text())
    for role in ("encoder", "denoiser", "scheduler", "conditioner"):
        assert a[role] == b[role], role
    assert {k: v for k, v in a["text_embedder"].items() if k != "pretrained"} == {
        k: v for k, v in b["text_embedder"].items() if k != "pretrained"
    }
    assert_same_tensors(imported, single_run)


def test_config_folder_describes_a_single_file(
    tiny_sd: tuple[Path, Any], single_file: Path, single_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "with-config"
    import_sd(single_file, run, config_dir=tiny_sd[0])
    assert_same_tensors(single_run, run)


def test_ckpt_through_weights_only_loading(tiny_sd: tuple[Path, Any], single_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "tiny-sd.ckpt"
    torch.save({"state_dict": original_checkpoint(tiny_sd[1]), "global_step": 7, "epoch": 1}, path)
    run = tmp_path / "from-ckpt"
    import_sd(path, run, tokenizer_dir=tiny_sd[0] / "tokenizer", image_size=LATENT * 8)
    assert_same_tensors(single_run, run)


def test_ckpt_needing_arbitrary_unpickling_is_refused(tiny_sd: tuple[Path, Any], tmp_path: Path) -> None:
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hyper_parameters": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(modiff.WeightsError, match="weights-only") as err:
        import_sd(path, tmp_path / "run", tokenizer_dir=tiny_sd[0] / "tokenizer")
    assert str(path) in str(err.value)
    assert not (tmp_path / "run").exists()


def test_weights_are_stored_in_the_runs_precision(tiny_sd: tuple[Path, Any], single_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "bf16"
    import_sd(single_file, run, tokenizer_dir=tiny_sd[0] / "tokenizer", image_size=LATENT * 8, precision="bf16")
    settings = tomllib.loads((run / "settings.toml").read_text())
    assert settings["run"]["precision"] == "bf16"
    unet = load_file(str(RunDir(run).weights("denoiser")))
    assert {t.dtype for t in unet.values()} == {torch.bfloat16}
    images = Pipeline.load(run, device="cpu").generate_tensor([CAPTIONS[0]], seed=0, steps=2, guidance=3.0)
    assert images.shape == (1, 3, LATENT * 8, LATENT * 8) and bool(torch.isfinite(images).all())


def test_single_file_needs_a_tokenizer(single_file: Path, tmp_path: Path) -> None:
    with pytest.raises(modiff.ModiffError, match="--tokenizer"):
        import_sd(single_file, tmp_path / "run")
