"""Every settings file the project ships resolves against the installed plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

from modiff.commands.demo import demo_settings_path
from modiff.settings import load

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "configs").glob("*.toml")) + [demo_settings_path()]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_shipped_settings_resolve(path: Path) -> None:
    resolved = load([path])
    assert resolved.components["denoiser"].name in {"unet", "dit"}
    if resolved.run.task == "segmentation":
        assert resolved.components["evaluator"].name == "iou"


@pytest.mark.parametrize("path", sorted((ROOT / "ablations").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_ablations_validate(path: Path) -> None:
    from modiff.ablation import read_ablation, validate

    ablation = read_ablation(path)
    validate(ablation)
    assert len(ablation.cells) >= 2
