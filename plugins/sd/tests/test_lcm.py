"""Imported SD 1.x weights draw with the ``lcm`` sampler as diffusers' LCMScheduler does (issue 40).

LCM-distilled SD weights (or SD with an LCM-LoRA fused in) are sampled with
``LCMScheduler`` and no classifier-free guidance. Here the tiny imported
pipeline is sampled with ``--scheduler lcm`` semantics (``with_sampler("lcm")``,
guidance 1) and compared with diffusers' pipeline with its scheduler swapped
for ``LCMScheduler``: same initial latents and the same per-image generators,
which both sides keep drawing the re-noising between steps from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import modiff
from _sd_tiny import CAPTIONS, LATENT, modiff_images
from modiff.pipeline import Pipeline

pytest.importorskip("diffusers", reason="diffusers is the reference")

pytestmark = [pytest.mark.filterwarnings("ignore:.*CLIP tokens"), pytest.mark.slow]  # slow: parity with diffusers
PROMPTS = [CAPTIONS[0], CAPTIONS[2]]
TOL = 1e-3


def _diffusers_lcm_images(pipe: Any, seed: int, steps: int) -> torch.Tensor:
    from diffusers import LCMScheduler

    original = pipe.scheduler
    pipe.scheduler = LCMScheduler.from_config(original.config)
    try:
        gens = modiff.generators([seed + i for i in range(len(PROMPTS))])
        latents = modiff.randn((len(PROMPTS), 4, LATENT, LATENT), gens)
        with torch.no_grad():
            out = pipe(
                PROMPTS, latents=latents, generator=gens, num_inference_steps=steps, guidance_scale=1.0,
                output_type="pt",
            )
    finally:
        pipe.scheduler = original
    return out.images


@pytest.mark.parametrize("steps", [1, 4])
def test_imported_sd_weights_draw_with_lcm_like_diffusers(
    tiny_sd: tuple[Path, Any], imported: Path, steps: int
) -> None:
    _, pipe = tiny_sd
    pipeline = Pipeline.load(imported, device="cpu").with_sampler("lcm")
    assert pipeline.scheduler.name == "lcm"
    ref = _diffusers_lcm_images(pipe, seed=7, steps=steps)
    mine = modiff_images(pipeline, PROMPTS, seed=7, steps=steps, guidance=1.0)
    assert mine.shape == ref.shape == (2, 3, LATENT * 8, LATENT * 8)
    assert float((mine - ref).abs().max()) < TOL
    # The comparison can fail: another seed moves the images by far more than TOL.
    assert float((_diffusers_lcm_images(pipe, seed=8, steps=steps) - ref).abs().max()) > 50 * TOL


def test_a_folder_saved_with_lcm_scheduler_imports_as_the_lcm_sampler(
    tiny_sd: tuple[Path, Any], tmp_path: Path
) -> None:
    """A diffusers folder whose scheduler is LCMScheduler (LCM weights, or an LCM-LoRA fused
    in and saved) imports with ``lcm`` and its skipping schedule, and exports back to it."""
    import shutil
    import tomllib

    from diffusers import LCMScheduler

    from modiff_sd.configs import scheduler_config
    from modiff_sd.importer import import_sd

    folder = tmp_path / "lcm-pipeline"
    shutil.copytree(tiny_sd[0], folder)
    LCMScheduler.from_config(tiny_sd[1].scheduler.config, original_inference_steps=25).save_config(
        str(folder / "scheduler")
    )
    import_sd(folder, tmp_path / "run")
    table = tomllib.loads((tmp_path / "run" / "settings.toml").read_text())["scheduler"]
    assert (table["plugin"], table["original_inference_steps"], table["beta_schedule"]) == ("lcm", 25, "scaled_linear")
    pipeline = Pipeline.load(tmp_path / "run", device="cpu")
    theirs = LCMScheduler.from_pretrained(str(folder / "scheduler"))
    theirs.set_timesteps(4)
    assert pipeline.sampler_name == "lcm"
    assert pipeline.scheduler.timesteps(4).tolist() == theirs.timesteps.tolist() == [999, 759, 519, 279]
    config = scheduler_config("lcm", table)
    assert config["_class_name"] == "LCMScheduler" and config["original_inference_steps"] == 25
