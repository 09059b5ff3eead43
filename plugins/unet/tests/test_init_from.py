"""``init_from``: a segmentation UNet starts from a text-to-image denoiser's backbone."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import modiff
from modiff.assembly import BuildContext
from modiff.protocols import ConditioningSpec, DenoiserSpec
from modiff.settings import RunSettings
from modiff.testing import build_one

TINY: dict[str, Any] = {"channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "head_dim": 4}
TEXT_TO_IMAGE = DenoiserSpec(3, 3, 8, ConditioningSpec(0, 12, None), num_classes=4)
SEGMENTATION = DenoiserSpec(3, 3, 8, ConditioningSpec(0, None, None), num_classes=4)


def make(spec: DenoiserSpec, task: str, seed: int, **settings: Any) -> Any:
    torch.manual_seed(seed)
    spec = dataclasses.replace(spec, head="segment" if task == "segmentation" else "denoise")  # what the task asks
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
    assert (
        "in the file but not in this UNet:" in text
        and "*.resnets.time_emb_proj (" in text
        and "time_embedding.linear_1 (2)" in text
    )


def test_the_same_shape_loads_everything(denoiser_file) -> None:
    path, source = denoiser_file
    copy = make(TEXT_TO_IMAGE, "text-to-image", seed=3, init_from=str(path))
    assert not copy.init_report.missing and not copy.init_report.mismatched and not copy.init_report.unused
    assert all(torch.equal(v, source[k]) for k, v in copy.state_dict().items())


def test_a_missing_file_or_one_without_shared_tensors_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(modiff.PluginError, match="init_from = '.*nowhere.safetensors' does not exist"):
        make(SEGMENTATION, "segmentation", seed=0, init_from=str(tmp_path / "nowhere.safetensors"))
    with pytest.raises(
        modiff.PluginError, match="init_from = '.*no-run' is neither a .safetensors file nor a run folder"
    ):
        make(SEGMENTATION, "segmentation", seed=0, init_from=str(tmp_path / "no-run"))
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(modiff.PluginError, match="no trained denoiser in that run folder"):
        make(SEGMENTATION, "segmentation", seed=0, init_from=str(tmp_path / "empty-run"))
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2)}, str(other))
    with pytest.raises(modiff.PluginError, match="shares no tensor"):
        make(SEGMENTATION, "segmentation", seed=0, init_from=str(other))


def test_a_run_folder_means_its_committed_denoiser(tmp_path: Path, use_registry) -> None:
    """The text-to-image run is trained for real (toys around a tiny UNet) and
    named by its folder, as an ablation file does."""
    import json

    from modiff import RunDir
    from modiff.settings import load
    from modiff.testing import plugin_registry
    from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
    from modiff.toml_io import dumps
    from modiff.workflows import train_run

    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["denoiser"] = {"plugin": "unet", **TINY}
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    settings = tmp_path / "t2i.toml"
    settings.write_text(dumps(data))
    run = RunDir(tmp_path / "runs" / "toy")
    train_run(load([settings]), run, progress=False)
    trained = load_file(str(run.weights("denoiser")))
    spec = DenoiserSpec(trained["conv_in.weight"].shape[1], 3, 8, ConditioningSpec(0, None, None), num_classes=4)
    seg = make(spec, "segmentation", seed=5, init_from=str(run.path))
    assert seg.init_report.path == str(run.weights("denoiser"))
    assert torch.equal(
        seg.state_dict()["down_blocks.0.resnets.0.conv1.weight"], trained["down_blocks.0.resnets.0.conv1.weight"]
    )


def test_init_from_may_not_be_empty() -> None:
    reg = modiff.registry().lookup("denoiser", "unet")
    with pytest.raises(ValueError, match="init_from is empty"):
        reg.validate({"init_from": " "})
    assert reg.validate({"init_from": "runs/x"}).init_from == "runs/x"
