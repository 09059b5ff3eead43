"""The `modiff` command: plugins, settings, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modiff.cli import main

BROKEN = 'raise ImportError("missing dependency xyz")\n'


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modiff", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow  # a subprocess
def test_plugins_lists_distributions_and_components() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    assert "modiff-schedulers" in result.stdout
    assert "scheduler" in result.stdout and "ddim" in result.stdout


def test_plugins_json_and_broken_plugin(fake_distribution, capsys) -> None:
    fake_distribution("fake-broken", "fake_broken", BROKEN)
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert any(
        d["distribution"] == "modiff-schedulers" and "ddim" in d["components"]["scheduler"]
        for d in data["distributions"]
    )
    [broken] = [b for b in data["broken"] if b["distribution"] == "fake-broken"]
    assert "missing dependency xyz" in broken["error"]
    assert main(["plugins"]) == 0
    assert "broken: fake_broken (fake-broken 0.0.1): ImportError: missing dependency xyz" in capsys.readouterr().out


@pytest.mark.slow  # a subprocess
def test_settings_show_fills_defaults_from_the_installed_plugin(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[scheduler]\nplugin = "ddim"\n')
    result = run_cli("settings", "show", str(path), "--set", "run.seed=7")
    # data/encoder/denoiser are missing unless their plugins are installed: the
    # message lists what is needed, exits 2 and shows no traceback.
    if result.returncode == 0:
        assert "seed = 7" in result.stdout and "num_train_timesteps" in result.stdout
    else:
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and "[denoiser]" in result.stderr


@pytest.mark.slow  # subprocesses
def test_user_mistakes_exit_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[scheduler]\nplugin = "ddim"\nbeta_schedul = "linear"\n')
    result = run_cli("settings", "show", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown key 'beta_schedul'" in result.stderr and str(path) in result.stderr
    missing = run_cli("settings", "show", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    bad_set = run_cli("settings", "show", str(path), "--set", "oops")
    assert bad_set.returncode == 2 and "table.key=value" in bad_set.stderr


def test_settings_schema_is_json_with_installed_plugins(capsys) -> None:
    assert main(["settings", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    branches = schema["properties"]["scheduler"]["oneOf"]
    assert any("ddim" in b["properties"]["plugin"]["enum"] for b in branches)
    ddim = next(b for b in branches if "ddim" in b["properties"]["plugin"]["enum"])
    assert ddim["additionalProperties"] is False and "eta" in ddim["properties"]


def test_no_command_prints_help_and_exits_2(capsys) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
