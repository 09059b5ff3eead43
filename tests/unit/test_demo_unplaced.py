"""The demo trains on prompts that name no place, so that a user's first
prompt ("a red circle") draws what it names (issue 37)."""

from __future__ import annotations

from modiff.commands.demo import demo_settings_path
from modiff.settings import read_toml
from modiff_datasets.config import ShapesSettings
from modiff_datasets.shapes import parse
from modiff_datasets.shapes.dataset import ShapesDataset


def test_the_demo_trains_on_captions_without_a_place() -> None:
    data = dict(read_toml(demo_settings_path())["data"])
    assert data.pop("plugin") == "shapes"
    settings = ShapesSettings(**{**data, "size": 1000})
    assert settings.unplaced > 0
    captions = list(ShapesDataset(settings).captions())
    unplaced = sum(all(o.cell is None for o in parse(c)) for c in captions)
    assert abs(unplaced / len(captions) - settings.unplaced) < 0.05
