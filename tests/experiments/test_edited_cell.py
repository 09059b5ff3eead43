"""A finished run is reused only if it is the run the ablation file asks for (issue 36, item 3):
a cell is matched to its run folder by its resolved settings, not by its name."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from modiff.ablation import read_ablation, validate
from modiff.cell_settings import cell_digest, digest
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps

GRID = """
[set]
"train.steps" = 2
[[variant]]
name = "plain"
[[variant]]
name = "concat"
set = {{ "denoiser.hidden" = 4{extra} }}
"""


@pytest.fixture
def base(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    path = tmp_path / "base.toml"
    path.write_text(dumps(data))
    return path


def write_grid(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "abl.toml"
    path.write_text('base = "base.toml"\n' + GRID.format(extra=extra))
    return path


def lr_of(folder: Path) -> float:
    return tomllib.loads((folder / "settings.toml").read_text())["train"]["lr"]


def test_a_variant_edited_after_its_run_finished_is_trained_again_not_reused(
    base: Path, tmp_path: Path, run_counting: Callable[[Path], tuple[list[str], list[str]]]
) -> None:
    out = tmp_path / "runs" / "abl"
    trained, _ = run_counting(write_grid(tmp_path))
    assert trained == ["plain", "concat"]
    old_lr = lr_of(out / "concat")
    assert old_lr != 1e-3

    trained, logged = run_counting(write_grid(tmp_path, extra=', "train.lr" = 1e-3'))
    assert trained == ["concat"], "the edited variant is trained again, the unchanged one reused"
    assert not any(line.startswith("[2/2] concat: finished earlier") for line in logged), logged
    aside = sorted(out.glob("concat.superseded-*"))
    assert len(aside) == 1, "the old run is kept aside, not deleted"
    assert lr_of(aside[0]) == old_lr and (aside[0] / "cell.json").is_file()
    assert lr_of(out / "concat") == 1e-3, "the run under the cell's name is the one the file asks for"
    said = f"concat: trained again: its settings changed (old run kept at {aside[0]})"
    assert said in logged, logged
    record = json.loads((out / "concat" / "cell.json").read_text())
    assert record["superseded"] == [aside[0].name]
    assert f"concat: trained again: its settings changed (old run kept at {aside[0].name})" in (
        out / "report.md"
    ).read_text()
    assert "trained again" in (out / "report.html").read_text()

    trained, logged = run_counting(write_grid(tmp_path, extra=', "train.lr" = 1e-3'))
    assert trained == [] and sum("finished earlier, skipped" in line for line in logged) == 2, logged


def test_a_half_finished_run_is_not_resumed_under_other_settings(
    base: Path, tmp_path: Path, run_counting: Callable[[Path], tuple[list[str], list[str]]]
) -> None:
    out = tmp_path / "runs" / "abl"
    run_counting(write_grid(tmp_path))
    (out / "concat" / "cell.json").unlink()  # as if stopped before its record was written
    trained, _ = run_counting(write_grid(tmp_path, extra=', "train.lr" = 1e-3'))
    assert trained == ["concat"]
    assert len(list(out.glob("concat.superseded-*"))) == 1
    assert lr_of(out / "concat") == 1e-3
    assert json.loads((out / "concat" / "cell.json").read_text())["status"] == "done"


def test_where_a_run_lives_and_who_watches_it_are_not_its_settings(base: Path, tmp_path: Path) -> None:
    ab = read_ablation(write_grid(tmp_path))
    validate(ab)
    settings = tomllib.loads(ab.resolved["plain"].to_toml())
    moved = json.loads(json.dumps(settings)) | {"track": {"group": "other", "tags": {"seed": "9"}}}
    moved["run"] |= {"runs_dir": "/elsewhere", "name": "renamed"}
    assert digest(moved) == digest(settings) == cell_digest(ab.resolved["plain"])
    changed = json.loads(json.dumps(settings))
    changed["train"]["lr"] = 1e-3
    assert digest(changed) != digest(settings)
