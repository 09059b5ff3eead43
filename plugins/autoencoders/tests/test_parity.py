"""Parity with diffusers' AutoencoderKL (a test-time reference only).

Random weights, perturbed so that every parameter (including GroupNorm scales,
which start at 1) matters; the state dict loads with ``strict=True`` and
encode (posterior mean) and decode agree to 1e-5.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from modiff.testing import build_one

diffusers = pytest.importorskip("diffusers", reason="diffusers is the reference for the parity test")
pytestmark = pytest.mark.slow  # parity with diffusers

CONFIGS: list[dict[str, Any]] = [
    # f = 2, SD's group count, one block per level.
    {"channels": [32, 64], "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 32},
    # f = 4, two blocks per level, 3 latent channels.
    {"channels": [16, 32, 32], "latent_channels": 3, "layers_per_block": 2, "norm_num_groups": 8},
    # f = 8 without mid-block attention.
    {
        "channels": [8, 16, 16, 16],
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "mid_block_attention": False,
    },
]


def reference(cfg: dict[str, Any]) -> Any:
    levels = len(cfg["channels"])
    torch.manual_seed(1)
    model = diffusers.AutoencoderKL(
        block_out_channels=tuple(cfg["channels"]),
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=cfg["latent_channels"],
        layers_per_block=cfg["layers_per_block"],
        norm_num_groups=cfg["norm_num_groups"],
        mid_block_add_attention=cfg.get("mid_block_attention", True),
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(params=range(len(CONFIGS)), ids=["f2-groups32", "f4-two-layers", "f8-no-attention"])
def pair(request: pytest.FixtureRequest) -> tuple[Any, Any, dict[str, Any]]:
    cfg = CONFIGS[request.param]
    ref = reference(cfg)
    mine = build_one("encoder", "kl-autoencoder", cfg).eval()
    result = mine.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return mine, ref, cfg


def test_parameter_names_are_diffusers_plus_latent_statistics(pair: tuple[Any, Any, dict[str, Any]]) -> None:
    mine, ref, _ = pair
    ours = set(mine.state_dict())
    theirs = set(ref.state_dict())
    assert ours - theirs == {"latent_norm.shift", "latent_norm.scale", "latent_norm.fitted"}
    assert theirs <= ours


def test_encode_mean_and_decode_match(pair: tuple[Any, Any, dict[str, Any]]) -> None:
    mine, ref, cfg = pair
    f = 2 ** (len(cfg["channels"]) - 1)
    x = torch.rand(2, 3, 4 * f, 2 * f, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = ref.encode(x).latent_dist
        got = mine.encode(x)
        torch.testing.assert_close(got, expected.mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine.posterior(x).logvar, expected.logvar, rtol=1e-5, atol=1e-5)
        z = torch.randn(2, cfg["latent_channels"], 4, 2, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(mine.decode(z), ref.decode(z).sample, rtol=1e-5, atol=1e-5)


def test_sd_style_scaling_matches_scaled_diffusers_latents(pair: tuple[Any, Any, dict[str, Any]]) -> None:
    """With SD 1.x's convention (one global factor, no shift) set by hand,
    encode returns diffusers' mean times the factor and decode undoes it."""
    mine, ref, cfg = pair
    f = 2 ** (len(cfg["channels"]) - 1)
    mine.set_latent_statistics(0.18215)
    assert mine.scaling_factor == pytest.approx(0.18215)
    assert not mine.needs_training
    x = torch.rand(1, 3, 2 * f, 2 * f, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        z = mine.encode(x)
        torch.testing.assert_close(z, ref.encode(x).latent_dist.mean * 0.18215, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine.decode(z), ref.decode(z / 0.18215).sample, rtol=1e-5, atol=1e-5)
