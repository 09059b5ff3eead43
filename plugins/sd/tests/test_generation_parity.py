"""Negative prompts and image-to-image against diffusers' pipelines, on the imported tiny SD.

Both sides start from modiff's per-sample noise (sample ``i`` seeded with
``seed + i``); image-to-image hands diffusers modiff's encoded image as its
latents (diffusers takes 4-channel images as latents, unscaled), so the two
differ only in what is tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import modiff
from _sd_tiny import CAPTIONS, LATENT, modiff_images, reference_images
from modiff.pipeline import Pipeline

pytest.importorskip("diffusers", reason="diffusers is the reference")
pytestmark = [pytest.mark.filterwarnings("ignore:.*CLIP tokens"), pytest.mark.slow]

STEPS = 4
TOL = 1e-4


@pytest.fixture(scope="module")
def pipeline(imported: Path) -> Pipeline:
    return Pipeline.load(imported, device="cpu")


def test_negative_prompts_match_diffusers(tiny_sd: tuple[Path, Any], pipeline: Pipeline) -> None:
    _, pipe = tiny_sd
    prompts, negatives = [CAPTIONS[0], CAPTIONS[2]], [CAPTIONS[3], CAPTIONS[1]]
    ref = reference_images(pipe, prompts, seed=2, steps=STEPS, guidance=7.5, negative_prompt=negatives)
    mine = pipeline.generate_tensor(prompts, seed=2, steps=STEPS, guidance=7.5, negative_prompt=negatives)
    assert float(((mine / 2 + 0.5).clamp(0, 1) - ref).abs().max()) < TOL
    plain = modiff_images(pipeline, prompts, seed=2, steps=STEPS, guidance=7.5)
    assert float((plain - ref).abs().max()) > 100 * TOL, "the negative prompt changes the image"


def _img2img(pipe: Any) -> Any:
    from diffusers import StableDiffusionImg2ImgPipeline

    return StableDiffusionImg2ImgPipeline(**pipe.components)


def _start_image(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize("strength", [0.25, 0.5, 0.75, 1.0])
def test_image_to_image_matches_diffusers_at_every_strength(
    tiny_sd: tuple[Path, Any], pipeline: Pipeline, strength: float
) -> None:
    _, pipe = tiny_sd
    img2img = _img2img(pipe)
    image = _start_image(LATENT * 8)
    with torch.no_grad():
        latents = pipeline.components.encoder.encode(image)
        # diffusers' first step and noise level for this strength, and modiff's
        img2img.scheduler.set_timesteps(STEPS)
        theirs, remaining = img2img.get_timesteps(STEPS, strength, "cpu")
        start = STEPS - min(int(STEPS * strength), STEPS)
        ours = pipeline.scheduler.timesteps(STEPS)[start:]
        assert remaining == STEPS - start
        torch.testing.assert_close(torch.as_tensor(ours).float(), theirs.float(), rtol=0, atol=0)
        ref = img2img(
            [CAPTIONS[0]], image=latents, strength=strength, num_inference_steps=STEPS, guidance_scale=5.0,
            generator=modiff.generators([6]), output_type="pt",
        ).images
    mine = pipeline.generate_tensor([CAPTIONS[0]], seed=6, steps=STEPS, guidance=5.0, init_images=image,
                                    strength=strength)
    assert float(((mine / 2 + 0.5).clamp(0, 1) - ref).abs().max()) < TOL


def test_image_to_image_at_strength_zero_returns_the_image(pipeline: Pipeline) -> None:
    image = _start_image(LATENT * 8)
    with torch.no_grad():
        round_trip = pipeline.decode(pipeline.components.encoder.encode(image))
    kept = pipeline.generate_tensor([CAPTIONS[1]], seed=0, steps=STEPS, init_images=image, strength=0.0)
    assert torch.equal(kept, round_trip)
    moved = pipeline.generate_tensor([CAPTIONS[1]], seed=0, steps=STEPS, init_images=image, strength=0.5)
    assert float((moved - round_trip).abs().max()) > 1e-2
