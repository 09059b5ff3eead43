"""configs/sd15.toml is SD 1.5's architecture; runs without a dataset need only [run] image_size."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import modiff
from _sd_tiny import make_tokenizer, quiet_libraries
from modiff.settings import load

SD15 = Path(__file__).resolve().parents[3] / "configs" / "sd15.toml"
#: CLIP ViT-L/14's text tower, SD 1.x's text encoder (configuration only: no weights are needed).
VIT_L14_TEXT = {
    "model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407, "projection_dim": 768,
}


def test_a_run_without_data_needs_an_image_size() -> None:
    tables = {"encoder": {"plugin": "identity"}, "denoiser": {"plugin": "unet"}, "scheduler": {"plugin": "ddim"}}
    resolved = load(base={**tables, "run": {"image_size": 16}}, environ={})
    assert "data" not in resolved.components
    with pytest.raises(modiff.SettingsError, match=r"no \[data\] table.*\[run\] image_size"):
        load(base=tables, environ={})


def test_sd15_is_stable_diffusions_architecture(tmp_path: Path) -> None:
    """Built on the meta device (no memory), every tensor of the UNet and the autoencoder has the
    name and shape of diffusers' SD 1.5 models, and the text tower is CLIP ViT-L/14's."""
    diffusers = pytest.importorskip("diffusers")
    quiet_libraries()
    (tmp_path / "config.json").write_text(json.dumps(VIT_L14_TEXT))
    make_tokenizer().save_pretrained(str(tmp_path))
    resolved = load([SD15], [f"text_embedder.pretrained={tmp_path}"], environ={})
    assert "data" not in resolved.components and resolved.run.image_size == 512
    weighted = {k: v for k, v in resolved.components.items() if k != "scheduler"}
    with torch.device("meta"):
        built = modiff.build(dataclasses.replace(resolved, components=weighted), device="meta")
        unet = diffusers.UNet2DConditionModel(
            sample_size=64, cross_attention_dim=768, attention_head_dim=8,
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = diffusers.AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512,
        )

    def shapes(module: torch.nn.Module, skip: str = "~") -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.startswith(skip)}

    assert shapes(built.denoiser) == shapes(unet)
    assert shapes(built.encoder, skip="latent_norm.") == shapes(vae)
    assert sum(v.numel() for v in built.denoiser.state_dict().values()) == 859_520_964
    text = built.text_embedder
    assert (text.dim, text.max_tokens) == (768, 77)
    assert sum(v.numel() for v in text.state_dict().values()) == 123_060_480
    schedule = resolved.components["scheduler"].params
    assert (schedule.beta_schedule, schedule.beta_start, schedule.beta_end) == ("scaled_linear", 0.00085, 0.012)
