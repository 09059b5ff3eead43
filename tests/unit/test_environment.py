"""A run records the environment that decides its bits, and reading it
elsewhere says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modiff import environment
from modiff.cli import main
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


@pytest.fixture
def run(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    data["train"]["steps"] = 4
    path = tmp_path / "toy.toml"
    path.write_text(dumps(data))
    assert main(["train", str(path), "--quiet"]) == 0
    return tmp_path / "runs" / "toy"


def test_training_records_the_environment_in_the_run(run: Path) -> None:
    recorded = json.loads((run / "environment.json").read_text())
    assert recorded["torch"] == torch.__version__ and recorded["threads"] == torch.get_num_threads()
    assert recorded["python"] and recorded["numpy"] and recorded["cpu"]
    assert "modiff" in recorded["distributions"]
    commit = recorded["git_commit"]  # this checkout's (others may commit meanwhile: its form, not its value)
    assert commit is not None and len(commit) == 40 and int(commit, 16) >= 0


def test_evaluate_and_generate_warn_in_one_line_when_the_environment_differs(run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert "another environment" not in capsys.readouterr().err  # the same one: silent
    path = run / "environment.json"
    recorded = json.loads(path.read_text())
    recorded["torch"] = "1.0.0"
    recorded["distributions"]["modiff"] = "0.0.1"
    path.write_text(json.dumps(recorded))
    assert main(["evaluate", str(run)]) == 0
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "another environment" in x]
    assert f"torch 1.0.0 -> {torch.__version__}" in line and "modiff 0.0.1 ->" in line
    assert main(["generate", str(run), "a red square", "--steps", "2"]) == 0
    assert "torch 1.0.0" in capsys.readouterr().err


def test_git_commit_is_read_from_a_checkout_without_git(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    (tmp_path / ".git" / "refs" / "heads").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / ".git" / "packed-refs").write_text(f"# pack-refs\n{commit} refs/heads/main\n")
    (tmp_path / "core" / "modiff").mkdir(parents=True)
    assert environment.git_commit(tmp_path / "core" / "modiff") == commit
    (tmp_path / ".git" / "refs" / "heads" / "main").write_text("f" * 40 + "\n")
    assert environment.git_commit(tmp_path / "core") == "f" * 40


def test_only_what_changes_bits_counts_as_a_difference() -> None:
    now = environment.current()
    assert environment.differences(now, {**now, "python": "2.7", "git_commit": "other"}) == []
    assert environment.differences(now, {**now, "threads": 99}) == [f"threads {now['threads']} -> 99"]
