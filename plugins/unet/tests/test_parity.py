"""Parity with diffusers' UNet2DConditionModel: same configuration, same weights, same outputs.

diffusers is the reference here only (a test-time dependency); the plugin never
imports it. Each configuration builds a diffusers model with random weights,
translates its configuration with ``from_diffusers_config``, loads the state
dict with ``strict=True`` and compares outputs on random inputs, including a
context padding mask (diffusers' ``encoder_attention_mask``).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from modiff.protocols import Conditioning
from modiff_unet.diffusers_layout import from_diffusers_config, unet_from_diffusers_config

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.slow  # parity with diffusers
logging.getLogger("diffusers").setLevel(logging.ERROR)

CROSS = "CrossAttnDownBlock2D", "CrossAttnUpBlock2D"
PLAIN = "DownBlock2D", "UpBlock2D"


def blocks(attention: list[bool]) -> dict[str, Any]:
    down = [CROSS[0] if a else PLAIN[0] for a in attention]
    up = [CROSS[1] if a else PLAIN[1] for a in reversed(attention)]
    return {"down_block_types": tuple(down), "up_block_types": tuple(up)}


CONFIGS: dict[str, dict[str, Any]] = {
    # Stable Diffusion 1.x in miniature: four levels, attention on the first three,
    # 1x1-conv projections, 8 heads (diffusers' `attention_head_dim` means heads here).
    "sd1-miniature": dict(
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=2,
        **blocks([True, True, True, False]),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        sample=(16, 16),
    ),
    # SD 2.x style: linear projections, per-level heads, two transformer blocks per layer.
    "linear-projection": dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        **blocks([True, True]),
        cross_attention_dim=24,
        attention_head_dim=(2, 4),
        transformer_layers_per_block=2,
        use_linear_projection=True,
        norm_num_groups=8,
        sample=(8, 8),
    ),
    # Class-conditional vector (class_embed_type="projection") and concatenated channels,
    # attention only in the middle level.
    "vector-and-concat": dict(
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        **blocks([False, True, False]),
        in_channels=7,
        concat_channels=3,
        cross_attention_dim=12,
        attention_head_dim=2,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=10,
        norm_num_groups=8,
        sample=(12, 12),
    ),
    # Depth per level: two residual blocks at full resolution, one below.
    "per-level-depth": dict(
        block_out_channels=(16, 32),
        layers_per_block=(2, 1),
        **blocks([True, False]),
        cross_attention_dim=12,
        attention_head_dim=2,
        norm_num_groups=8,
        sample=(8, 8),
    ),
    # A single-resnet middle (mid_block_type "UNetMidBlock2D") and an odd, non-square
    # size that is no multiple of the total stride (upsampling follows the skips' sizes).
    "plain-mid-odd-size": dict(
        block_out_channels=(16, 32, 48),
        layers_per_block=2,
        **blocks([True, True, False]),
        mid_block_type="UNetMidBlock2D",
        cross_attention_dim=20,
        attention_head_dim=(2, 4, 4),
        norm_num_groups=8,
        sample=(9, 7),
    ),
}


def make_pair(name: str, seed: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """A diffusers UNet with random (perturbed) weights and ours with the same state dict."""
    config = dict(CONFIGS[name])
    sample = config.pop("sample")
    concat = config.pop("concat_channels", 0)
    config.setdefault("in_channels", 4)
    config.setdefault("out_channels", 4)
    torch.manual_seed(seed)
    reference = diffusers.UNet2DConditionModel(sample_size=sample[0], **config).eval()
    with torch.no_grad():  # move every weight off its default init (norm scales of 1, zero biases)
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = unet_from_diffusers_config(reference.config, concat_channels=concat).eval()
    missing, unexpected = ours.load_state_dict(reference.state_dict(), strict=True)
    assert not missing and not unexpected
    return reference, ours, {"sample": sample, "concat": concat, **config}


def inputs(config: dict[str, Any], batch: int = 3, length: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = config["sample"]
    concat = config["concat"]
    x = torch.randn(batch, config["in_channels"] - concat, h, w, generator=g)
    extra = torch.randn(batch, concat, h, w, generator=g) if concat else None
    t = torch.tensor([999.0, 3.5, 421.0][:batch])
    context = torch.randn(batch, length, config["cross_attention_dim"], generator=g)
    lengths = torch.tensor([length, 2, 5][:batch])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    context[~mask] = 30.0  # junk under the mask
    vector = None
    if config.get("class_embed_type") == "projection":
        vector = torch.randn(batch, config["projection_class_embeddings_input_dim"], generator=g)
    return {"x": x, "extra": extra, "t": t, "context": context, "mask": mask, "vector": vector}


def run_reference(reference: Any, i: dict[str, torch.Tensor]) -> torch.Tensor:
    sample = i["x"] if i["extra"] is None else torch.cat([i["x"], i["extra"]], 1)
    return reference(
        sample,
        i["t"],
        encoder_hidden_states=i["context"],
        encoder_attention_mask=i["mask"],
        class_labels=i["vector"],
    ).sample


def run_ours(ours: Any, i: dict[str, torch.Tensor]) -> torch.Tensor:
    return ours(i["x"], i["t"], Conditioning(i["extra"], i["context"], i["mask"], i["vector"]))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_outputs_match_diffusers(name: str) -> None:
    reference, ours, config = make_pair(name)
    i = inputs(config)
    with torch.no_grad():
        expected = run_reference(reference, i)
        got = run_ours(ours, i)
    assert got.shape == expected.shape
    assert float(expected.abs().max()) > 0.1, "the reference output is degenerate; the comparison would prove little"
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_gradients_match_diffusers() -> None:
    reference, ours, config = make_pair("sd1-miniature")
    reference.train()
    ours.train()
    i = inputs(config, batch=2)
    run_reference(reference, i).square().mean().backward()
    run_ours(ours, i).square().mean().backward()
    ref_grads = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        expected = ref_grads[name].grad
        assert p.grad is not None and expected is not None, name
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_sd1_shaped_config_translates() -> None:
    """The real SD 1.x configuration (as in its config.json) maps onto these settings."""
    sd1 = {
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    }
    settings, spec = from_diffusers_config(sd1)
    assert settings.channels == [320, 640, 1280, 1280] and settings.attention_levels == [0, 1, 2]
    assert settings.heads == 8 and settings.cross_attention_dim == 768 and not settings.use_linear_projection
    assert spec.in_channels == 4 and spec.sample_size == 64 and spec.conditioning.context_dim == 768


@pytest.mark.parametrize(
    "change, match",
    [
        ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift"),
        ({"addition_embed_type": "text"}, "addition_embed_type"),
        ({"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"]}, "one side only"),
        ({"class_embed_type": "timestep"}, "class_embed_type"),
    ],
)
def test_unsupported_diffusers_options_are_named(change: dict[str, Any], match: str) -> None:
    config = {
        "block_out_channels": [32, 64],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        **change,
    }
    with pytest.raises(ValueError, match=match):
        from_diffusers_config(config)


def test_per_level_depth_exports_to_a_diffusers_unet_that_loads_our_weights() -> None:
    """``to_diffusers_config`` writes depth per level as diffusers reads it: the
    exported configuration builds a model our state dict fills exactly."""
    from modiff_unet.config import UNetSettings
    from modiff_unet.diffusers_layout import to_diffusers_config

    settings = UNetSettings(
        channels=[16, 32], layers_per_block=[2, 1], attention_levels=[0], heads=2,
        cross_attention_dim=12, norm_num_groups=8,
    )
    config = to_diffusers_config(settings, in_channels=4, sample_size=8)
    assert config["layers_per_block"] == [2, 1]
    reference = diffusers.UNet2DConditionModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    ours = unet_from_diffusers_config(reference.config)
    missing, unexpected = reference.load_state_dict(ours.state_dict(), strict=True)
    assert not missing and not unexpected
