"""Issue 37: every problem of the settings (files, environment, ``--set``) in
one error, core tables and plugin tables together, each unknown key with the
nearest known one."""

from __future__ import annotations

from pathlib import Path

import pytest

from modiff.cli import main
from modiff.errors import SettingsError
from modiff.settings import load
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps

REGISTRY = plugin_registry(ToyPlugin())


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.toml"
    path.write_text(dumps(TOY_SETTINGS))
    return path


def problems_of(*args, **kwargs) -> list[str]:
    with pytest.raises(SettingsError) as info:
        load(*args, environ={}, registry=REGISTRY, **kwargs)
    return info.value.problems


def test_core_and_plugin_problems_of_a_set_list_are_reported_together(base: Path) -> None:
    problems = problems_of(
        [base], ["train.lrr=1", "denoiser.hiden=[1]", "scheduler.plugin=tyo", "run.nmae=x"]
    )
    assert len(problems) == 4, problems
    by_key = {key: next(p for p in problems if f"'{key}'" in p) for key in ("lrr", "hiden", "tyo", "nmae")}
    assert "(did you mean 'lr'?)" in by_key["lrr"] and "--set train.lrr=1" in by_key["lrr"]
    assert "(did you mean 'hidden'?)" in by_key["hiden"] and "[denoiser]" in by_key["hiden"]
    assert "did you mean 'toy'" in by_key["tyo"]
    assert "(did you mean 'name'?)" in by_key["nmae"]


def test_a_bad_core_table_does_not_make_its_roles_missing(base: Path) -> None:
    """A problem in [run] leaves [run] at its defaults for phase 2; no
    invented 'no [denoiser] table' problem follows from a bad [denoiser] shape."""
    problems = problems_of([base], ["run.seed=-1", 'denoiser="unet"'])
    assert len(problems) == 2, problems
    assert not any("no [denoiser] table" in p for p in problems), problems


def test_an_unknown_table_gets_the_nearest_table(base: Path) -> None:
    (problem,) = problems_of([base], ["denoisr.hidden=1"])
    assert "unknown key 'denoisr'" in problem and "(did you mean 'denoiser'?)" in problem


def test_a_key_near_nothing_gets_no_guess(base: Path) -> None:
    (problem,) = problems_of([base], ["train.zzzzzz=1"])
    assert "did you mean" not in problem and "allowed keys: steps" in problem


def test_every_unreadable_file_and_set_is_reported_together(base: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    problems = problems_of([base, tmp_path / "missing.toml", broken], ["no-equals-sign", "train.steps=2"])
    assert len(problems) == 3, problems
    assert any("missing.toml" in p for p in problems)
    assert any("broken.toml" in p for p in problems)
    assert any("no-equals-sign" in p for p in problems)


def test_the_command_line_lists_every_problem_once(base: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("modiff.settings.default_registry", lambda: REGISTRY)
    args = ["settings", "show", str(base), "--set", "train.lrr=1", "--set", "denoiser.hiden=1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("modiff: error: 2 problems in the settings:"), err
    assert "'lrr'" in err and "'hiden'" in err
