"""What is particular to the DiT: adaLN-Zero start, patch layout, positions,
masking, errors, and use from a settings file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

import modiff
import modiff_dit
from modiff.protocols import Conditioning, ConditioningSpec, DenoiserSpec
from modiff.settings import RunSettings
from modiff.testing import build_one, plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff_dit.model import DiT, sincos_2d

REGISTRY = plugin_registry(modiff_dit)
TINY: dict[str, Any] = {"patch_size": 2, "width": 16, "depth": 2, "heads": 2, "frequency_dim": 16}
SPEC = DenoiserSpec(in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(2, 12, 6))


def build(spec: DenoiserSpec = SPEC, task: str = "text-to-image", **settings: Any) -> DiT:
    torch.manual_seed(0)
    spec = dataclasses.replace(spec, head="segment" if task == "segmentation" else "denoise")  # what the task asks
    ctx = modiff.BuildContext(run=RunSettings(task=task), denoiser_spec=spec)
    return build_one("denoiser", "dit", {**TINY, **settings}, context=ctx, registry_=REGISTRY).eval()


def inputs(spec: DenoiserSpec = SPEC, batch: int = 2, size: int = 8, length: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cs = spec.conditioning
    x = torch.randn(batch, spec.in_channels, size, size, generator=g)
    t = torch.rand(batch, generator=g) * 999
    concat = torch.randn(batch, cs.concat_channels, size, size, generator=g) if cs.concat_channels else None
    context = torch.randn(batch, length, cs.context_dim, generator=g) if cs.context_dim else None
    mask = torch.ones(batch, length, dtype=torch.bool) if cs.context_dim else None
    vector = torch.randn(batch, cs.vector_dim, generator=g) if cs.vector_dim else None
    return x, t, Conditioning(concat, context, mask, vector)


def test_a_fresh_dit_is_the_zero_function_and_its_blocks_the_identity() -> None:
    """adaLN-Zero: gates, cross-attention outputs and the final layer start at zero."""
    d = build()
    x, t, c = inputs()
    with torch.no_grad():
        assert torch.equal(d(x, t, c), torch.zeros_like(x))
        tokens = torch.randn(2, 16, 16)
        cond = torch.randn(2, 16)
        context = torch.randn(2, 5, 16)
        for block in d.blocks:
            torch.testing.assert_close(block(tokens, cond, context, None), tokens, rtol=0, atol=0)


def test_each_patch_of_the_output_comes_from_the_same_patch_of_the_input() -> None:
    """With identity blocks (no mixing between tokens), changing the pixels of
    one patch changes exactly that patch of the prediction: patchify and
    unpatchify agree on where each patch is. (The order of pixels inside a
    patch is a convention the learned final layer absorbs.)"""
    d = build(patch_size=2)
    with torch.no_grad():
        torch.nn.init.normal_(d.final.linear.weight)
    x, t, c = inputs()
    changed = x.clone()
    changed[:, :, 2:4, 4:6] += 1.0  # the patch at row 1, column 2
    with torch.no_grad():
        diff = (d(changed, t, c) - d(x, t, c)).abs().sum((0, 1))
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:4, 4:6] = True
    assert bool((diff[inside] > 0).all()) and bool((diff[~inside] == 0).all())


def test_sinusoidal_positions() -> None:
    pos = sincos_2d(3, 4, 16)
    assert pos.shape == (12, 16)
    assert bool((pos.abs() <= 1).all())
    # position (0, 0): sines 0, cosines 1
    torch.testing.assert_close(pos[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    assert torch.cdist(pos, pos).add(torch.eye(12)).min() > 0.1, "every position has its own embedding"
    # the row half depends only on the row, the column half only on the column
    torch.testing.assert_close(pos[4, :8], pos[7, :8])  # (1, 0) and (1, 3)
    torch.testing.assert_close(pos[1, 8:], pos[9, 8:])  # (0, 1) and (2, 1)


def test_learned_positions_start_sinusoidal_and_resize() -> None:
    d = build(pos_embed="learned")
    assert d.pos is not None and d.pos.shape == (1, 16, 16)
    torch.testing.assert_close(d.pos[0], sincos_2d(4, 4, 16))
    x = torch.zeros(1, 16, 16)
    assert d.position(4, 4, x) is not None and d.position(2, 3, x).shape == (1, 6, 16)
    assert {n for n, _ in d.named_parameters()} >= {"pos"}


def test_a_row_without_real_context_ignores_the_context() -> None:
    d = build()
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t, c = inputs()
    mask = c.context_mask.clone()
    mask[1] = False
    with torch.no_grad():
        out = d(x, t, Conditioning(c.concat, c.context, mask, c.vector))
        without = d(x, t, Conditioning(c.concat, None, None, c.vector))
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out[1], without[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out[0], without[0])


def test_size_errors_name_the_patch_size() -> None:
    d = build(patch_size=4)
    x, t, c = inputs(size=6)
    with pytest.raises(ValueError, match="6x6 is not a multiple of patch_size = 4"):
        d(x, t, c)
    with pytest.raises(modiff.ModiffError, match="patch_size = 3 does not divide the latent size 8"):
        build(patch_size=3)
    with pytest.raises(ValueError, match="2 concatenated channels"):
        d(x[..., :4, :4], t, Conditioning(None, c.context, c.context_mask, c.vector))


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="heads = 3 must divide width = 16"):
        modiff_dit.DiTSettings(width=16, heads=3)
    with pytest.raises(ValidationError, match="multiple of 4"):
        modiff_dit.DiTSettings(width=18, heads=2)
    modiff_dit.DiTSettings(width=18, heads=2, pos_embed="learned")  # fine without sinusoids
    with pytest.raises(ValidationError, match="extra"):
        modiff_dit.DiTSettings(depht=3)


def test_segmentation_needs_classes() -> None:
    spec = DenoiserSpec(in_channels=4, out_channels=4, sample_size=8)
    with pytest.raises(modiff.ModiffError, match="at least 2 classes"):
        build(spec, task="segmentation")
    d = build(spec, head="segment", num_classes=3)
    x, t, c = inputs(spec)
    assert d(x, t, c).shape == (2, 3, 8, 8)


def test_trains_and_samples_from_a_settings_file(tmp_path: Path, use_registry: Any) -> None:
    """``[denoiser] plugin = "dit"`` next to other plugins: the assembly shapes
    it (concat, context and vector from the conditioner), the core trains it,
    and the run reloads and generates."""
    from modiff.pipeline import Pipeline
    from modiff.runs import RunDir
    from modiff.workflows import train_run

    registry = use_registry(plugin_registry(ToyPlugin(), modiff_dit))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["denoiser"] = {"plugin": "dit", **TINY}
    data["data"]["image_size"] = 8
    data["train"].update(steps=6, lr=3e-3)
    resolved = modiff.resolve(modiff.load_settings(base=data, environ={}), registry)
    run = RunDir(tmp_path / "run")
    pipeline = train_run(resolved, run, progress=False)
    assert isinstance(pipeline.components.denoiser, DiT)
    assert pipeline.components.denoiser.spec.conditioning.context_dim == 8
    losses = [m["loss"] for m in run.read_metrics() if m.get("stage") == "denoiser"]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    # training moved the zero-initialised paths: the prediction is no longer zero
    again = Pipeline.load(run.path, registry=registry)
    images = again.generate_tensor(["a red square", "a blue square"], seed=1, steps=3)
    assert images.shape == (2, 3, 8, 8) and bool(torch.isfinite(images).all())
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        cond, _ = again.conditioning(["a red square"])
        assert again.components.denoiser(x, torch.tensor([500.0]), cond).abs().sum() > 0
