"""Settings files, overlays, environment, --set, and two-phase resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modiff.errors import SettingsError
from modiff.settings import load, load_settings, parse_set, resolve
from modiff.testing import plugin_registry
from modiff.testing.strategies import settings_tables
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps

REGISTRY = plugin_registry(ToyPlugin())


def write(path: Path, data: dict) -> Path:
    path.write_text(dumps(data))
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path / "base.toml", TOY_SETTINGS)


def test_a_settings_file_resolves_every_role(base: Path) -> None:
    resolved = load([base], registry=REGISTRY)
    assert resolved.components["denoiser"].name == "toy"
    assert resolved.components["denoiser"].params.hidden == 16  # default filled in
    assert resolved.train.steps == 4
    assert resolved.components["evaluator"].name == "toy"
    assert "text_embedder" in resolved.components


def test_typo_names_the_file_table_key_and_allowed_keys(base: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.toml"
    overlay.write_text('[denoiser]\nhiden = 3\n')
    with pytest.raises(SettingsError) as info:
        load([base, overlay], registry=REGISTRY)
    message = str(info.value)
    assert "'hiden'" in message and "[denoiser]" in message and str(overlay) in message
    assert "allowed keys: plugin, hidden" in message


def test_unknown_table_is_reported_with_its_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[denoisr]\nplugin = "toy"\n')
    with pytest.raises(SettingsError, match=r"unknown key 'denoisr'.*s\.toml.*allowed keys: run, data"):
        load_settings([path])


def test_all_problems_are_reported_together(base: Path, tmp_path: Path) -> None:
    overlay = write(
        tmp_path / "o.toml", {"denoiser": {"hiden": 1}, "scheduler": {"plugin": "tyo"}, "encoder": {"downscale": 0}}
    )
    with pytest.raises(SettingsError) as info:
        load([base, overlay], registry=REGISTRY)
    problems = info.value.problems
    assert len(problems) == 3
    assert any("did you mean 'toy'" in p for p in problems)
    assert any("downscale" in p and "greater than or equal to 1" in p for p in problems)


def test_missing_required_role_lists_choices(tmp_path: Path) -> None:
    data = {k: v for k, v in TOY_SETTINGS.items() if k != "denoiser"}
    with pytest.raises(SettingsError, match=r"no \[denoiser\] table; choose a plugin \(toy\)"):
        load([write(tmp_path / "s.toml", data)], registry=REGISTRY)


def test_precedence_file_then_overlay_then_env_then_set(base: Path, tmp_path: Path) -> None:
    overlay = write(tmp_path / "o.toml", {"denoiser": {"hidden": 20}, "train": {"lr": 0.5}})
    env = {"MODIFF_DENOISER__HIDDEN": "24", "MODIFF_TRAIN__BATCH_SIZE": "7", "UNRELATED": "x"}
    resolved = load([base, overlay], ["denoiser.hidden=32"], environ=env, registry=REGISTRY)
    assert resolved.components["denoiser"].params.hidden == 32  # --set beats env
    assert resolved.train.batch_size == 7  # env beats file
    assert resolved.train.lr == 0.5  # overlay beats base
    assert resolved.train.steps == 4  # base kept where nothing overrides
    resolved = load([base, overlay], environ=env, registry=REGISTRY)
    assert resolved.components["denoiser"].params.hidden == 24


def test_values_are_parsed_as_toml() -> None:
    assert parse_set("denoiser.channels=[64,128]") == {"denoiser": {"channels": [64, 128]}}
    assert parse_set("train.lr=2e-4") == {"train": {"lr": 2e-4}}
    assert parse_set("scheduler.plugin=ddim") == {"scheduler": {"plugin": "ddim"}}
    assert parse_set('run.name="a b"') == {"run": {"name": "a b"}}
    with pytest.raises(SettingsError, match="table.key=value"):
        parse_set("nothing")


def test_an_env_variable_naming_no_table_is_reported_like_a_typo_in_a_file(base: Path) -> None:
    """``MODIFF_DENOSIER__HIDDEN`` must not be dropped silently (the denoiser
    would keep its old width without a word)."""
    env = {"MODIFF_DENOSIER__HIDDEN": "24", "MODIFF_TRAIN__BATCH_SIZE": "7", "MODIFF_STRICT_PLUGINS": "1"}
    with pytest.raises(SettingsError) as info:
        load([base], environ=env, registry=REGISTRY)
    message = str(info.value)
    assert "unknown table 'denosier' in environment variable MODIFF_DENOSIER__HIDDEN" in message
    assert "did you mean MODIFF_DENOISER__HIDDEN?" in message and "allowed tables: run, data" in message
    with pytest.raises(SettingsError, match="environment variable MODIFF_NOPE__X; allowed tables"):
        load([base], environ={"MODIFF_NOPE__X": "1"}, registry=REGISTRY)


def test_env_lists_are_parsed(base: Path) -> None:
    env = {"MODIFF_SAMPLE__PROMPTS": '["a", "b"]'}
    assert load([base], environ=env, registry=REGISTRY).sample.prompts == ["a", "b"]


def test_overlay_switching_plugin_drops_the_old_plugins_keys(tmp_path: Path) -> None:
    plugin = ToyPlugin()
    reg = plugin_registry(plugin)
    base = write(tmp_path / "b.toml", {**TOY_SETTINGS, "encoder": {"plugin": "toy", "downscale": 2}})
    overlay = write(tmp_path / "o.toml", {"encoder": {"plugin": "modiff:toy"}})
    resolved = load([base, overlay], registry=reg)
    assert resolved.components["encoder"].params.downscale == 1


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[run\n")
    with pytest.raises(SettingsError, match="bad.toml is not valid TOML"):
        load_settings([path])
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings([tmp_path / "missing.toml"])


def test_resolved_settings_round_trip_through_toml(base: Path, tmp_path: Path) -> None:
    resolved = load([base], registry=REGISTRY)
    again = write(tmp_path / "again.toml", {})
    again.write_text(resolved.to_toml())
    assert load([again], registry=REGISTRY).to_dict() == resolved.to_dict()


ROLES = [
    "data",
    "encoder",
    "text_embedder",
    "conditioner",
    "denoiser",
    "scheduler",
    "evaluator",
    "run",
    "train",
    "sample",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    role=st.sampled_from(ROLES), table=st.one_of(settings_tables(), st.integers(), st.text(), st.lists(st.integers()))
)
def test_junk_in_any_table_is_a_settings_error_and_nothing_else(role: str, table) -> None:
    data = {**TOY_SETTINGS, role: table}
    try:
        resolve(load_settings(base=data, environ={}), REGISTRY)
    except SettingsError as exc:
        assert str(exc)
