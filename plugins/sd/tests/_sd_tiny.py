"""A tiny Stable Diffusion pipeline built with diffusers, offline (test-time reference only).

diffusers and transformers are test-time references only. The pipeline
follows SD 1.x's structure and conventions at a tiny size: a 3-level UNet
with attention on the first two levels (SD: 3 of 4) and 8 heads, a 4-level
autoencoder (f = 8), a CLIP text encoder with 64-wide heads, 32 GroupNorm
groups everywhere, a CLIP tokenizer trained on a few captions with
``model_max_length`` 12, and SD's DDIM scheduler configuration. Weights
are random and then perturbed, so that no parameter keeps an inert value
(GroupNorm scales of exactly 1, zero biases) that a wrong mapping could hide
behind.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from modiff.runs import RunDir

CAPTIONS = [
    "a red circle",
    "a blue square on the left",
    "a photograph of an astronaut riding a horse",
    "a small green triangle at the top right",
]
MAX_TOKENS = 12
LATENT = 8  # latent size; images are 64 x 64


def quiet_libraries() -> None:
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    warnings.filterwarnings("ignore", message=".*accelerate.*")
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from diffusers.utils import logging as d_logging

    d_logging.set_verbosity_error()
    d_logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def make_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer().train_new_from_iterator(CAPTIONS, vocab_size=300, show_progress=False)
    tok.model_max_length = MAX_TOKENS
    return tok


def perturb(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def assemble_pipeline(text: Any, tok: Any, unet: Any, vae: Any) -> Any:
    """A ``StableDiffusionPipeline`` of these parts with SD's DDIM configuration,
    no safety checker and no progress bar; the benchmarks' SD-shaped pipelines
    are put together the same way, so both compare against the same reference."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_pipeline(seed: int = 0) -> Any:
    """The tiny diffusers StableDiffusionPipeline (random, perturbed weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = make_tokenizer()
    torch.manual_seed(seed)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
            max_position_embeddings=MAX_TOKENS, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 64), layers_per_block=2, sample_size=LATENT, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=1, norm_num_groups=32,
        sample_size=LATENT * 8,
    )
    for i, m in enumerate((text, unet, vae)):
        perturb(m, seed * 10 + i)
    return assemble_pipeline(text, tok, unet, vae)


def reference_images(
    pipe: Any, prompts: list[str], seed: int, steps: int, guidance: float, **kwargs: Any
) -> torch.Tensor:
    """diffusers' images in [0, 1] from modiff's initial noise (sample i seeded with seed + i)."""
    import modiff

    gens = modiff.generators([seed + i for i in range(len(prompts))])
    latents = modiff.randn((len(prompts), 4, LATENT, LATENT), gens)
    with torch.no_grad():
        out = pipe(
            prompts, latents=latents, num_inference_steps=steps, guidance_scale=guidance, output_type="pt", **kwargs
        )
    return out.images


def modiff_images(pipeline: Any, prompts: list[str], seed: int, steps: int, guidance: float) -> torch.Tensor:
    """modiff's images mapped to diffusers' output range ([0, 1], clamped)."""
    images = pipeline.generate_tensor(prompts, seed=seed, steps=steps, guidance=guidance)
    return (images / 2 + 0.5).clamp(0, 1)


def _load(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def _tensors(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    roles = ("denoiser", "encoder", "text_embedder")
    return {role: _load(str(RunDir(run).weights(role))) for role in roles}


def assert_same_tensors(a: Path, b: Path) -> None:
    """The runs' weights are equal bit for bit, dtypes included."""
    ta, tb = _tensors(a), _tensors(b)
    for role in ta:
        assert set(ta[role]) == set(tb[role]), role
        for name in ta[role]:
            assert ta[role][name].dtype == tb[role][name].dtype, (role, name)
            assert torch.equal(ta[role][name], tb[role][name]), (role, name)
