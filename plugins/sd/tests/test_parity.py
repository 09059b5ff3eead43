"""Imported SD weights generate diffusers' images: same prompt, seed, noise, sampler and guidance.

Both sides start from the same initial latents (modiff's per-sample noise,
handed to diffusers as ``latents``; neither sampler used here rescales it
differently) and run the same number of steps; the decoded images, in
[0, 1], must agree within 1e-3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from _sd_tiny import CAPTIONS, LATENT, modiff_images, reference_images
from modiff.pipeline import Pipeline

pytest.importorskip("diffusers", reason="diffusers is the reference")

# The second prompt is longer than the tiny tokenizer's 12 tokens: both sides truncate it alike.
PROMPTS = [CAPTIONS[0], CAPTIONS[1]]
pytestmark = [pytest.mark.filterwarnings("ignore:.*CLIP tokens"), pytest.mark.slow]  # slow: parity with diffusers
STEPS = 4
TOL = 1e-3


@pytest.fixture(scope="module")
def pipeline(imported: Path) -> Pipeline:
    return Pipeline.load(imported, device="cpu")


def test_settings_name_modiffs_components(imported: Path) -> None:
    import tomllib

    settings = tomllib.loads((imported / "settings.toml").read_text())
    assert {r: settings[r]["plugin"] for r in ("encoder", "text_embedder", "conditioner", "denoiser", "scheduler")} == {
        "encoder": "kl-autoencoder",
        "text_embedder": "sd-clip",
        "conditioner": "sd-cross-attention",
        "denoiser": "unet",
        "scheduler": "ddim",
    }
    assert "data" not in settings and settings["run"]["image_size"] == LATENT * 8
    sched = settings["scheduler"]
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"], sched["num_train_timesteps"]) == (
        "scaled_linear", 0.00085, 0.012, 1000,
    )
    assert (sched["timestep_spacing"], sched["steps_offset"], sched["set_alpha_to_one"]) == ("leading", 1, False)
    assert settings["encoder"]["latent_normalization"] == "global"


def test_images_match_diffusers_with_guidance(tiny_sd: tuple[Path, Any], pipeline: Pipeline) -> None:
    _, pipe = tiny_sd
    ref = reference_images(pipe, PROMPTS, seed=3, steps=STEPS, guidance=7.5)
    mine = modiff_images(pipeline, PROMPTS, seed=3, steps=STEPS, guidance=7.5)
    assert mine.shape == ref.shape == (2, 3, LATENT * 8, LATENT * 8)
    assert float((mine - ref).abs().max()) < TOL
    # The comparison can fail: guidance, the prompt and the seed all move the images by far more than TOL.
    unguided = reference_images(pipe, PROMPTS, seed=3, steps=STEPS, guidance=1.0)
    other_seed = reference_images(pipe, PROMPTS, seed=4, steps=STEPS, guidance=7.5)
    assert float((unguided - ref).abs().max()) > 50 * TOL
    assert float((other_seed - ref).abs().max()) > 50 * TOL
    assert float((ref[0] - ref[1]).abs().max()) > 50 * TOL


def test_sampler_swap_matches_diffusers(tiny_sd: tuple[Path, Any], pipeline: Pipeline) -> None:
    """Another sampler of the same schedule, chosen at generation time, still matches."""
    from diffusers import EulerDiscreteScheduler

    _, pipe = tiny_sd
    original = pipe.scheduler
    # Spelled out: from_config would drop the keys the DDIM config holds at their defaults
    # (`_use_default_values`) and take Euler's own defaults (linspace spacing) instead.
    pipe.scheduler = EulerDiscreteScheduler.from_config(original.config, timestep_spacing="leading", steps_offset=1)
    try:
        ref = reference_images(pipe, PROMPTS[:1], seed=5, steps=STEPS, guidance=5.0)
    finally:
        pipe.scheduler = original
    mine = modiff_images(pipeline.with_sampler("euler"), PROMPTS[:1], seed=5, steps=STEPS, guidance=5.0)
    assert float((mine - ref).abs().max()) < TOL


def test_prompt_embeddings_match_diffusers(tiny_sd: tuple[Path, Any], imported: Path) -> None:
    """The prompt and null embeddings are diffusers' ``encode_prompt``'s; ``skip_layers`` is its
    ``clip_skip`` (spelled out here: diffusers 0.42's clip_skip path fails with transformers 5)."""
    _, pipe = tiny_sd
    plain = Pipeline.load(imported, device="cpu")
    skipped = Pipeline.load(imported, device="cpu", sets=["text_embedder.skip_layers=1"])
    tok = pipe.tokenizer
    with torch.no_grad():
        theirs, negative = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
        ids = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        hidden = pipe.text_encoder(ids.input_ids, output_hidden_states=True).hidden_states[-2]
        theirs_skipped = pipe.text_encoder.final_layer_norm(hidden)
        mine = plain.components.text_embedder.embed(PROMPTS)
        null = plain.components.conditioner.null(2, like=mine)
        mine_skipped = skipped.components.text_embedder.embed(PROMPTS)
    torch.testing.assert_close(mine.tokens, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(null.context, negative, rtol=0, atol=1e-5)
    torch.testing.assert_close(mine_skipped.tokens, theirs_skipped, rtol=0, atol=1e-5)
    assert not torch.allclose(mine_skipped.tokens, mine.tokens, atol=1e-3)
    assert bool(mine.mask.all()) and mine.tokens.shape[1] == tok.model_max_length


def test_generate_command_uses_the_run(imported: Path, tmp_path: Path) -> None:
    from modiff.cli import main

    out = tmp_path / "grid.png"
    assert main(["generate", str(imported), CAPTIONS[2], "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert out.is_file() and out.stat().st_size > 0
