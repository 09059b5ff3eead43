"""The original <-> diffusers key layout: a bijection for every structure, read back from the
names alone, and what diffusers' own single-file converter understands as the original layout."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modiff_sd import layout
from modiff_sd.layout import LayoutError, UNetStructure, VAEStructure

#: Parameter names inside each kind of block, on the diffusers side.
INNER = {
    "unet-resnet": [
        "norm1.weight", "conv1.weight", "time_emb_proj.weight", "norm2.bias", "conv2.weight", "conv_shortcut.weight"
    ],
    "vae-resnet": ["norm1.weight", "conv1.bias", "conv2.weight", "conv_shortcut.weight"],
    "vae-attention": ["group_norm.weight", "to_q.weight", "to_k.bias", "to_v.weight", "to_out.0.weight"],
    "same": ["weight", "bias", "transformer_blocks.0.attn2.to_k.weight", "proj_in.weight"],
}


def diffusers_names(blocks: list[tuple[str, str, str]]) -> list[str]:
    return [f"{d}.{inner}" for _, d, kind in blocks for inner in INNER[kind]]


unet_structures = st.builds(
    UNetStructure,
    attention=st.lists(st.booleans(), min_size=1, max_size=5).map(tuple),
    layers=st.integers(1, 3),
    mid_attention=st.booleans(),
    class_embedding=st.booleans(),
)
vae_structures = st.builds(
    VAEStructure, levels=st.integers(1, 5), layers=st.integers(1, 3), mid_attention=st.booleans()
)


@settings(max_examples=40, deadline=None)
@given(structure=unet_structures)
def test_unet_names_round_trip_and_reveal_the_structure(structure: UNetStructure) -> None:
    mapper = structure.block_map()
    names = diffusers_names(structure.blocks())
    original = [mapper.to_original(n) for n in names]
    assert all(r is not None for r in original)
    assert len({r.target for r in original}) == len(names), "two tensors map to one name"
    back = [mapper.to_diffusers(r.target) for r in original]
    assert [r.target for r in back] == names
    assert UNetStructure.from_original([r.target for r in original]) == structure
    assert UNetStructure.from_diffusers(names) == structure


@settings(max_examples=30, deadline=None)
@given(structure=vae_structures)
def test_vae_names_round_trip_and_reveal_the_structure(structure: VAEStructure) -> None:
    mapper = structure.block_map()
    names = diffusers_names(structure.blocks())
    original = [mapper.to_original(n) for n in names]
    assert len({r.target for r in original}) == len(names)
    back = [mapper.to_diffusers(r.target) for r in original]
    assert [r.target for r in back] == names
    # Exactly the attention projections' weights change shape (1x1 convolutions in the original).
    reshaped = {n for n, r in zip(names, original) if r.reshape == "to_conv"}
    projections = ("to_q.weight", "to_v.weight", "to_out.0.weight")
    assert reshaped == {n for n in names if ".attentions." in n and n.endswith(projections)}
    assert all(b.reshape == "to_linear" for b, r in zip(back, original) if r.reshape == "to_conv")
    assert VAEStructure.from_original([r.target for r in original]) == structure


SD1 = UNetStructure(attention=(True, True, True, False), layers=2)


@pytest.mark.parametrize(
    ("original", "diffusers"),
    [
        # Stable Diffusion 1.x names, as its released checkpoints spell them.
        ("time_embed.0.weight", "time_embedding.linear_1.weight"),
        ("input_blocks.0.0.weight", "conv_in.weight"),
        ("input_blocks.1.0.in_layers.0.weight", "down_blocks.0.resnets.0.norm1.weight"),
        ("input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
         "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight"),
        ("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"),
        ("input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight"),
        ("input_blocks.11.0.emb_layers.1.bias", "down_blocks.3.resnets.1.time_emb_proj.bias"),
        ("middle_block.1.proj_in.weight", "mid_block.attentions.0.proj_in.weight"),
        ("middle_block.2.out_layers.3.weight", "mid_block.resnets.1.conv2.weight"),
        ("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
        ("output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"),
        ("output_blocks.11.1.proj_out.weight", "up_blocks.3.attentions.2.proj_out.weight"),
        ("out.2.weight", "conv_out.weight"),
    ],
)
def test_stable_diffusion_1_names(original: str, diffusers: str) -> None:
    mapper = SD1.block_map()
    assert mapper.to_diffusers(original).target == diffusers
    assert mapper.to_original(diffusers).target == original


def test_vae_decoder_levels_are_numbered_from_the_top_in_the_original() -> None:
    mapper = VAEStructure(levels=4, layers=2).block_map()
    cases = {
        "decoder.up.3.block.0.nin_shortcut.weight": "decoder.up_blocks.0.resnets.0.conv_shortcut.weight",
        "decoder.up.0.block.2.conv1.weight": "decoder.up_blocks.3.resnets.2.conv1.weight",
        "decoder.up.3.upsample.conv.weight": "decoder.up_blocks.0.upsamplers.0.conv.weight",
    }
    for original, diffusers in cases.items():
        assert mapper.to_diffusers(original).target == diffusers
    attention = layout.Rename("encoder.mid_block.attentions.0.to_out.0.weight", "to_linear")
    assert mapper.to_diffusers("encoder.mid.attn_1.proj_out.weight") == attention


def test_names_outside_the_structure_are_refused() -> None:
    assert SD1.block_map().to_diffusers("input_blocks.12.0.in_layers.0.weight") is None
    with pytest.raises(LayoutError, match="belongs to no block"):
        layout.original_renames("unet", [f"{o}.weight" for o, _, _ in SD1.blocks()] + ["output_blocks.12.0.weight"])
    with pytest.raises(LayoutError, match="equal depth"):
        UNetStructure.from_original(
            ["input_blocks.0.0.weight", "input_blocks.1.0.in_layers.0.weight", "input_blocks.3.0.op.weight"]
        )


def test_text_encoder_names() -> None:
    assert layout.text_canonical("encoder.layers.0.mlp.fc1.weight") == "text_model.encoder.layers.0.mlp.fc1.weight"
    assert layout.text_canonical("text_model.final_layer_norm.bias") == "text_model.final_layer_norm.bias"
    split = layout.split_original(
        [
            "cond_stage_model.transformer.text_model.embeddings.position_ids",
            "model_ema.decay",
            "betas",
            "first_stage_model.quant_conv.weight",
        ]
    )
    assert split.parts["text_encoder"] == ["text_model.embeddings.position_ids"]
    assert split.parts["vae"] == ["quant_conv.weight"]
    assert split.ignored == ["model_ema.decay"] and split.other == ["betas"]


# --------------------------------------------------------------------------
# Against diffusers' own converter (test-time reference)
# --------------------------------------------------------------------------


def _unet(**config: Any) -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, cross_attention_dim=16, norm_num_groups=8, **config)


UNET_CONFIGS = {
    "sd1-like": dict(
        block_out_channels=(8, 16, 16), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2,
    ),
    "attention-everywhere-linear": dict(
        block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2, use_linear_projection=True,
        transformer_layers_per_block=2,
    ),
    "no-attention-in-front": dict(
        block_out_channels=(8, 16, 16), layers_per_block=3,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=2,
    ),
}


@pytest.mark.parametrize("name", list(UNET_CONFIGS))
def test_unet_original_layout_is_what_diffusers_converts(name: str) -> None:
    """Our original-layout names, fed to diffusers' ``convert_ldm_unet_checkpoint``, come back
    as the model's own state dict: both sides agree on what the original layout is."""
    pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    model = _unet(**UNET_CONFIGS[name])
    state = model.state_dict()
    mapper = UNetStructure.from_diffusers(state).block_map()
    original = {"model.diffusion_model." + mapper.to_original(k).target: v for k, v in state.items()}
    converted = convert_ldm_unet_checkpoint(original, dict(model.config))
    assert set(converted) == set(state)
    assert all(torch.equal(converted[k], state[k]) for k in state)
    # And our reading of the original names gives the model's names back.
    renames = layout.original_renames("unet", [k[len("model.diffusion_model.") :] for k in original])
    assert {r.target for r in renames.values()} == set(state)


def test_vae_original_layout_is_what_diffusers_converts() -> None:
    pytest.importorskip("diffusers")
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    torch.manual_seed(0)
    model = AutoencoderKL(
        block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, layers_per_block=2, norm_num_groups=8,
    )
    state = model.state_dict()
    mapper = VAEStructure.from_diffusers(state).block_map()
    original = {}
    for k, v in state.items():
        rename = mapper.to_original(k)
        original["first_stage_model." + rename.target] = rename.apply(v)
    assert original["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (16, 16, 1, 1)
    converted = convert_ldm_vae_checkpoint(original, dict(model.config))
    assert set(converted) == set(state)
    assert all(torch.equal(converted[k], state[k]) for k in state)
