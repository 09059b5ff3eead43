"""Damaged, incomplete and mismatched sources: a clear error naming the file and the tensor,
and no half-written run left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import modiff
from _sd_tiny import LATENT
from modiff_sd.importer import import_sd
from modiff_sd.layout import to_original_checkpoint

UNET = Path("unet") / "diffusion_pytorch_model.safetensors"


@pytest.fixture
def folder(tiny_sd: tuple[Path, Any], tmp_path: Path) -> Path:
    """A private copy of the tiny diffusers folder, to damage."""
    copy = tmp_path / "source"
    shutil.copytree(tiny_sd[0], copy)
    return copy


def _rewrite(path: Path, edit: Any) -> None:
    with safe_open(str(path), "pt") as fh:
        metadata = fh.metadata()
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata=metadata)


def _fails(source: Path, tmp_path: Path, match: str, **kwargs: Any) -> str:
    run = tmp_path / "run"
    with pytest.raises(modiff.ModiffError, match=match) as err:
        import_sd(source, run, **kwargs)
    assert not run.exists(), "a failed import must not leave a run behind"
    assert not list(tmp_path.glob(".run.*")), "nor its temporary directory"
    return str(err.value)


def test_truncated_weights_name_the_file(folder: Path, tmp_path: Path) -> None:
    path = folder / UNET
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _fails(folder, tmp_path, "truncated or corrupt")
    assert str(path) in message


def test_garbage_header_names_the_file(folder: Path, tmp_path: Path) -> None:
    path = folder / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32  # inside the JSON header
    path.write_bytes(bytes(data))
    assert str(path) in _fails(folder, tmp_path, "not a readable safetensors file")


def test_corrupt_values_name_the_file_and_the_tensor(folder: Path, tmp_path: Path) -> None:
    path = folder / UNET

    def poison(t: dict[str, torch.Tensor]) -> None:
        t["mid_block.resnets.0.conv1.weight"].view(-1)[7] = float("nan")

    _rewrite(path, poison)
    message = _fails(folder, tmp_path, "NaN or infinite")
    assert "'mid_block.resnets.0.conv1.weight'" in message and str(path) in message


def test_missing_component_folder(folder: Path, tmp_path: Path) -> None:
    shutil.rmtree(folder / "vae")
    assert str(folder / "vae") in _fails(folder, tmp_path, "missing part")


def test_missing_tokenizer(folder: Path, tmp_path: Path) -> None:
    shutil.rmtree(folder / "tokenizer")
    assert str(folder / "tokenizer") in _fails(folder, tmp_path, "missing part")


def test_missing_tensor_is_named(folder: Path, tmp_path: Path) -> None:
    _rewrite(folder / UNET, lambda t: t.pop("up_blocks.1.attentions.2.proj_out.weight"))
    message = _fails(folder, tmp_path, "missing")
    assert "'up_blocks.1.attentions.2.proj_out.weight'" in message and str(folder / UNET) in message


def test_shape_mismatch_names_file_tensor_and_shapes(folder: Path, tmp_path: Path) -> None:
    def widen(t: dict[str, torch.Tensor]) -> None:
        t["conv_in.weight"] = torch.zeros(32, 5, 3, 3)

    _rewrite(folder / UNET, widen)
    message = _fails(folder, tmp_path, "shape")
    assert "'conv_in.weight'" in message and "(32, 5, 3, 3)" in message and "(32, 4, 3, 3)" in message
    assert str(folder / UNET) in message


def test_config_that_disagrees_with_the_weights(folder: Path, tmp_path: Path) -> None:
    config = folder / "unet" / "config.json"
    data = json.loads(config.read_text())
    data["layers_per_block"] = 1
    config.write_text(json.dumps(data))
    message = _fails(folder, tmp_path, "do(es)? not fit the denoiser")
    assert "fit nowhere" in message and "down_blocks.0.attentions.1." in message


def test_truncated_config_names_the_file(folder: Path, tmp_path: Path) -> None:
    config = folder / "unet" / "config.json"
    config.write_text(config.read_text()[:50])
    assert str(config) in _fails(folder, tmp_path, "not readable JSON")


def test_unsupported_option_is_named(folder: Path, tmp_path: Path) -> None:
    config = folder / "unet" / "config.json"
    data = json.loads(config.read_text())
    data["class_embed_type"] = "timestep"
    config.write_text(json.dumps(data))
    _fails(folder, tmp_path, "class_embed_type = 'timestep'")


def test_a_fast_tokenizer_in_the_index_is_the_same_tokenizer(folder: Path, tmp_path: Path) -> None:
    """transformers 5 has one CLIP tokenizer class; ``CLIPTokenizerFast`` is another name for it."""
    index = folder / "model_index.json"
    data = json.loads(index.read_text())
    data["tokenizer"] = ["transformers", "CLIPTokenizerFast"]
    index.write_text(json.dumps(data))
    assert import_sd(folder, tmp_path / "fast").run.is_dir()
    data["tokenizer"] = ["transformers", "T5TokenizerFast"]
    index.write_text(json.dumps(data))
    message = _fails(folder, tmp_path, "tokenizer is a 'T5TokenizerFast'")
    assert "CLIPTokenizer or CLIPTokenizerFast" in message


def test_pickled_component_weights_need_weights_only_loading(folder: Path, tmp_path: Path) -> None:
    """A .bin in a diffusers folder is read like a .ckpt: tensors only."""
    path = folder / UNET
    tensors = load_file(str(path))
    path.unlink()
    torch.save({"weights": tensors, "config": object()}, path.with_suffix(".bin"))
    assert str(path.with_suffix(".bin")) in _fails(folder, tmp_path, "weights-only")


def test_single_file_missing_a_part(tiny_sd: tuple[Path, Any], tmp_path: Path) -> None:
    pipe = tiny_sd[1]
    ckpt = to_original_checkpoint(pipe.unet.state_dict(), pipe.vae.state_dict(), pipe.text_encoder.state_dict())
    path = tmp_path / "no-vae.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt.items() if not k.startswith("first_stage_model.")}, str(path))
    message = _fails(path, tmp_path, "missing part", tokenizer_dir=tiny_sd[0] / "tokenizer", image_size=LATENT * 8)
    assert "first_stage_model." in message and str(path) in message


def test_single_file_of_another_model_family(tiny_sd: tuple[Path, Any], tmp_path: Path) -> None:
    path = tmp_path / "sd2.safetensors"
    tensors = {
        "cond_stage_model.model.token_embedding.weight": torch.zeros(4, 4),
        "model.diffusion_model.out.2.bias": torch.zeros(4),
    }
    save_file(tensors, str(path))
    _fails(path, tmp_path, "OpenCLIP", tokenizer_dir=tiny_sd[0] / "tokenizer")


def test_existing_run_is_not_replaced(tiny_sd: tuple[Path, Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    with pytest.raises(modiff.RunError, match="--overwrite"):
        import_sd(tiny_sd[0], run)
    assert (run / "keep.txt").read_text() == "mine"
    with pytest.raises(modiff.RunError, match="not a modiff run"):  # --overwrite replaces runs only
        import_sd(tiny_sd[0], run, overwrite=True)
    assert [p.name for p in run.iterdir()] == ["keep.txt"] and (run / "keep.txt").read_text() == "mine"
