"""``init_from``: a segmentation UNet starts from a text-to-image denoiser's backbone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import modiff
import pytest
import torch
from modiff.assembly import BuildContext
from modiff.protocols import ConditioningSpec, DenoiserSpec
from modiff.settings import RunSettings
from modiff.testing import build_one
from safetensors.torch import save_file

TINY: dict[str, Any] = {"channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "head_dim": 4}
TEXT_TO_IMAGE = DenoiserSpec(3, 3, 8, ConditioningSpec(0, 12, None), num_classes=4)
SEGMENTATION = DenoiserSpec(3, 3, 8, ConditioningSpec(0, None, None), num_classes=4)


def make(spec: DenoiserSpec, task: str, seed: int, **settings: Any) -> Any:
    torch.manual_seed(seed)
    ctx = BuildContext(run=RunSettings(task=task), denoiser_spec=spec)  # type: ignore[arg-type]
    return build_one("denoiser", "unet", {**TINY, **settings}, context=ctx)


@pytest.fixture
def denoiser_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    source = make(TEXT_TO_IMAGE, "text-to-image", seed=1)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / "denoiser.safetensors"
    save_file(state, str(path))
    return path, state


def test_the_backbone_is_loaded_and_the_task_specific_parts_stay_fresh(denoiser_file, caplog) -> None:
    path, source = denoiser_file
    fresh = make(SEGMENTATION, "segmentation", seed=2).state_dict()
    with caplog.at_level(logging.WARNING, logger="modiff_unet"):
        seg = make(SEGMENTATION, "segmentation", seed=2, init_from=str(path))
    state = seg.state_dict()
    report = seg.init_report
    assert report.loaded and set(report.loaded) <= set(source)
    for name in report.loaded:
        assert torch.equal(state[name], source[name]), name
    # the residual blocks and self-attention come from the denoiser ...
    assert "down_blocks.0.resnets.0.conv1.weight" in report.loaded
    assert any(".attn1.to_q." in name for name in report.loaded)
    # ... the output layer (4 classes vs 3 channels) and everything absent in the file stay as built
    assert "conv_out.weight" in report.mismatched
    assert report.mismatched["conv_out.weight"] == ((3, 8, 3, 3), (4, 8, 3, 3))
    for name in [*report.missing, *report.mismatched]:
        assert torch.equal(state[name], fresh[name]), name
    # the time embedding and cross-attention exist only in the text-to-image denoiser
    assert any(n.startswith("time_embedding.") for n in report.unused)
    assert any(".attn2." in n for n in report.unused)
    assert any("time_emb_proj" in n for n in report.unused)
    assert len(report.loaded) + len(report.missing) + len(report.mismatched) == len(state)
    assert report.loaded_parameters == sum(state[n].numel() for n in report.loaded)
    text = caplog.text
    assert f"init_from {path}" in text and "conv_out.weight [3, 8, 3, 3] in the file vs [4, 8, 3, 3] here" in text
    assert "in the file but not in this UNet:" in text and "*.resnets.time_emb_proj (" in text and "time_embedding.linear_1 (2)" in text


def test_the_same_shape_loads_everything(denoiser_file) -> None:
    path, source = denoiser_file
    copy = make(TEXT_TO_IMAGE, "text-to-image", seed=3, init_from=str(path))
    assert not copy.init_report.missing and not copy.init_report.mismatched and not copy.init_report.unused
    assert all(torch.equal(v, source[k]) for k, v in copy.state_dict().items())


def test_a_missing_file_or_one_without_shared_tensors_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(modiff.PluginError, match="init_from = '.*nowhere.safetensors' does not exist"):
        make(SEGMENTATION, "segmentation", seed=0, init_from=str(tmp_path / "nowhere.safetensors"))
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2)}, str(other))
    with pytest.raises(modiff.PluginError, match="shares no tensor"):
        make(SEGMENTATION, "segmentation", seed=0, init_from=str(other))


def test_init_from_must_name_a_safetensors_file() -> None:
    reg = modiff.registry().lookup("denoiser", "unet")
    with pytest.raises(ValueError, match="init_from = 'runs/x/denoiser.pt' must name a .safetensors file"):
        reg.validate({"init_from": "runs/x/denoiser.pt"})
    assert reg.validate({"init_from": "runs/x/components/denoiser.safetensors"}).init_from.endswith(".safetensors")
