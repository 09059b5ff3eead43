"""Behaviour of the UNet beyond the contract: heads, settings errors, masks, checkpointing, layouts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from pydantic import ValidationError

import modiff
from modiff.assembly import BuildContext
from modiff.protocols import Conditioning, ConditioningSpec, DenoiserSpec
from modiff.settings import RunSettings
from modiff.testing import build_one
from modiff_unet.config import UNetSettings
from modiff_unet.unet import UNet

TINY: dict[str, Any] = {"channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "head_dim": 4}
SPEC = DenoiserSpec(4, 4, 8, ConditioningSpec(0, 12, None), num_classes=3)


def make(settings: dict[str, Any] | None = None, spec: DenoiserSpec = SPEC, task: str = "text-to-image") -> UNet:
    torch.manual_seed(0)
    spec = dataclasses.replace(spec, head="segment" if task == "segmentation" else "denoise")  # what the task asks
    ctx = BuildContext(run=RunSettings(task=task), denoiser_spec=spec)  # type: ignore[arg-type]
    return build_one("denoiser", "unet", {**TINY, **(settings or {})}, context=ctx).eval()


def inputs(
    batch: int = 2, size: int = 8, length: int = 5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, Conditioning]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, size, size, generator=g)
    t = torch.rand(batch, generator=g) * 999
    ctx = torch.randn(batch, length, 12, generator=g)
    return x, t, Conditioning(context=ctx, context_mask=torch.ones(batch, length, dtype=torch.bool))


def test_registered_through_the_entry_point() -> None:
    reg = modiff.registry().lookup("denoiser", "unet")
    assert reg.distribution == "modiff-unet" and reg.settings_model is UNetSettings


def test_head_follows_the_task_and_segment_has_no_time_weights() -> None:
    denoise = make()
    segment = make(task="segmentation")
    assert denoise.head == "denoise" and segment.head == "segment"
    keys = set(segment.state_dict())
    assert not any("time_embedding" in k or "time_emb_proj" in k for k in keys)
    assert any("time_emb_proj" in k for k in denoise.state_dict())
    x, t, c = inputs()
    with torch.no_grad():
        assert segment(x, t, c).shape == (2, 3, 8, 8)
        assert segment(x, None, c).shape == (2, 3, 8, 8)  # t may be omitted entirely


def test_segment_head_needs_classes() -> None:
    spec = DenoiserSpec(4, 4, 8, ConditioningSpec(0, 12, None), num_classes=0)
    with pytest.raises(modiff.PluginError, match="num_classes"):
        make({"head": "segment"}, spec=spec)
    assert make({"head": "segment", "num_classes": 7}, spec=spec).conv_out.out_channels == 7


def test_state_dict_has_no_derived_buffers() -> None:
    """Only weights are saved: the sinusoid frequencies are rebuilt from the shape."""
    unet = make()
    assert not any("freqs" in k for k in unet.state_dict())
    assert set(unet.state_dict()) == {n for n, _ in unet.named_parameters()}


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"norm_num_groups": 3}, "norm_num_groups"),
        ({"heads": 2, "head_dim": 4}, "not both"),
        ({"attention_levels": [0, 2]}, "attention_levels"),
        ({"transformer_depth": [1, 1, 1]}, "transformer_depth"),
        ({"layers_per_block": [2, 1, 1]}, "layers_per_block"),
        ({"layers_per_block": [2, 0]}, "layers_per_block must be positive"),
        ({"chanels": [8]}, "chanels"),
    ],
)
def test_settings_errors_name_the_key(settings: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        UNetSettings(**{**TINY, **settings})


def test_layers_per_block_per_level_sets_each_levels_depth() -> None:
    """One number per level: residual blocks on the way down, one more on the way up."""
    unet = make({"layers_per_block": [2, 1]})
    assert [len(b.resnets) for b in unet.down_blocks] == [2, 1]
    assert [len(b.resnets) for b in unet.up_blocks] == [2, 3]  # the up path runs from the lowest level
    x, t, c = inputs()
    with torch.no_grad():
        assert unet(x, t, c).shape == x.shape


def test_head_dim_must_divide_channels() -> None:
    with pytest.raises(modiff.PluginError, match="head_dim = 3"):
        make({"head_dim": 3})


def test_cross_attention_dim_must_match_the_conditioner() -> None:
    with pytest.raises(modiff.PluginError, match="cross_attention_dim = 20"):
        make({"cross_attention_dim": 20})
    assert make({"cross_attention_dim": 12}).cross_attention_dim == 12


def test_without_context_transformers_only_self_attend() -> None:
    unet = make(spec=DenoiserSpec(4, 4, 8, ConditioningSpec(0, None, None)))
    assert not any(".attn2." in k for k in unet.state_dict())
    assert any(".attn1." in k for k in unet.state_dict())
    x, t, _ = inputs()
    with torch.no_grad():
        assert unet(x, t, Conditioning()).shape == x.shape


def test_a_row_without_real_tokens_means_no_context() -> None:
    """An all-False mask row gives a finite prediction that ignores the context values."""
    unet = make()
    x, t, c = inputs()
    mask = c.context_mask.clone()  # type: ignore[union-attr]
    mask[0] = False
    other = c.context.clone()  # type: ignore[union-attr]
    other[0] = torch.randn_like(other[0]) * 100
    with torch.no_grad():
        a = unet(x, t, Conditioning(context=c.context, context_mask=mask))
        b = unet(x, t, Conditioning(context=other, context_mask=mask))
    assert bool(torch.isfinite(a).all())
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_scalar_timestep_is_broadcast() -> None:
    unet = make()
    x, _, c = inputs()
    with torch.no_grad():
        torch.testing.assert_close(unet(x, torch.tensor(250.0), c), unet(x, torch.full((2,), 250.0), c))


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda x, t, c: (x[:, :3], t, c), "x_t has shape"),
        (lambda x, t, c: (x, t[:1].repeat(3), c), "t has shape"),
        (lambda x, t, c: (x, t, Conditioning()), "context is None"),
        (lambda x, t, c: (x, t, Conditioning(context=torch.zeros(2, 3, 5))), "cross_attention_dim"),
        (lambda x, t, c: (x, t, Conditioning(torch.zeros(2, 1, 8, 8), c.context, c.context_mask)), "concat"),
    ],
)
def test_input_errors_are_clear(change: Any, match: str) -> None:
    unet = make()
    with pytest.raises(ValueError, match=match):
        unet(*change(*inputs()))


def test_missing_vector_is_an_error() -> None:
    unet = make(spec=DenoiserSpec(4, 4, 8, ConditioningSpec(2, None, 6)))
    x, t, _ = inputs()
    with pytest.raises(ValueError, match="vector"):
        unet(x, t, Conditioning(concat=torch.zeros(2, 2, 8, 8)))


def test_gradient_checkpointing_changes_memory_not_results() -> None:
    plain = make({"dropout": 0.1})
    checkpointed = make({"dropout": 0.1, "gradient_checkpointing": True})
    checkpointed.load_state_dict(plain.state_dict())
    x, t, c = inputs()
    grads = []
    for unet in (plain, checkpointed):
        unet.train()
        torch.manual_seed(3)  # same dropout masks in both
        unet(x, t, c).square().mean().backward()
        grads.append({n: p.grad for n, p in unet.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(
            grads[1][name], g, rtol=1e-5, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_dropout_is_active_only_in_training() -> None:
    unet = make({"dropout": 0.5})
    x, t, c = inputs()
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, c), unet(x, t, c), rtol=0, atol=0)
        unet.train()
        assert not torch.allclose(unet(x, t, c), unet(x, t, c))


@pytest.mark.parametrize("linear", [False, True])
def test_channels_last_gives_the_same_prediction(linear: bool) -> None:
    unet = make({"use_linear_projection": linear})
    x, t, c = inputs()
    with torch.no_grad():
        expected = unet(x, t, c)
        unet = unet.to(memory_format=torch.channels_last)
        got = unet(x.to(memory_format=torch.channels_last), t, c)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_heads_follow_head_dim_or_heads() -> None:
    by_dim = make({"channels": [8, 16], "head_dim": 4})
    by_heads = make({"channels": [8, 16], "head_dim": None, "heads": [2, 2]})
    attn = lambda u, level: u.down_blocks[level].attentions[0].transformer_blocks[0].attn1  # noqa: E731
    assert (attn(by_dim, 0).heads, attn(by_dim, 1).heads) == (2, 4)
    assert (attn(by_heads, 0).head_dim, attn(by_heads, 1).head_dim) == (4, 8)


# ---------------------------------------------------------------- attention positions


def test_position_features_are_coordinates_not_pixels() -> None:
    from modiff_unet.unet import POSITION_FREQUENCIES, position_features

    small = position_features(2, 2, device=torch.device("cpu"), dtype=torch.float32)
    assert small.shape == (4, 4 * POSITION_FREQUENCIES)
    # the lowest frequency's sine of y: pixel centres at -0.5 and +0.5 of the grid
    torch.testing.assert_close(small[:, 0], torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    big = position_features(4, 4, device=torch.device("cpu"), dtype=torch.float32)
    assert len({tuple(row.tolist()) for row in big}) == 16, "every pixel has its own features"


def test_positions_start_as_the_plain_unet_and_are_trained() -> None:
    plain, placed = make(), make({"attention_positions": True})
    extra = set(placed.state_dict()) - set(plain.state_dict())
    assert extra and all(k.endswith("pos_proj.weight") for k in extra)
    placed.load_state_dict({**placed.state_dict(), **plain.state_dict()})
    x, t, cond = inputs()
    with torch.no_grad():
        torch.testing.assert_close(placed(x, t, cond), plain(x, t, cond))
    placed.train()
    placed(x, t, cond).square().sum().backward()
    grads = [p.grad for n, p in placed.named_parameters() if n.endswith("pos_proj.weight")]
    assert grads and all(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_positions_tell_pixels_apart() -> None:
    """With positions, a block's output at two pixels differs even where its input is identical."""
    from modiff_unet.unet import Transformer2D

    torch.manual_seed(0)
    block = Transformer2D(8, heads=2, head_dim=4, depth=1, context_dim=None, groups=4, linear=False, dropout=0.0,
                          positions=True).eval()
    with torch.no_grad():
        block.pos_proj.weight.normal_()
        x = torch.randn(1, 8, 1, 1).expand(1, 8, 4, 4).contiguous()
        out = block(x, None, None)
    assert not torch.allclose(out[0, :, 0, 0], out[0, :, 3, 3], atol=1e-4)
    block.pos_proj = None
    with torch.no_grad():
        same = block(x, None, None)
    torch.testing.assert_close(same[0, :, 0, 0], same[0, :, 3, 3])
