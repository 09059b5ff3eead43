"""`modiff ablate`: grid expansion, validation before training, resume, the report."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from modiff.ablation import read_ablation, run_ablation, validate
from modiff.cli import main
from modiff.errors import SettingsError
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


@pytest.fixture
def base(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    path = tmp_path / "base.toml"
    path.write_text(dumps(data))
    return path


def ablation_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "abl.toml"
    path.write_text('base = "base.toml"\n' + body)
    return path


def test_grid_times_variants_times_seeds(base: Path, tmp_path: Path) -> None:
    path = ablation_file(tmp_path, """
seeds = [0, 1]
[set]
"train.steps" = 2
[grid]
"denoiser.hidden" = [4, 8]
[[variant]]
name = "plain"
[[variant]]
name = "wide-text"
set = { "text_embedder.dim" = 16 }
""")
    ab = read_ablation(path)
    assert len(ab.cells) == 2 * 2 * 2
    assert len({c.name for c in ab.cells}) == 8
    validate(ab)
    wide = [c for c in ab.cells if c.name.startswith("wide-text")]
    assert all(ab.resolved[c.name].components["text_embedder"].params.dim == 16 for c in wide)
    assert {ab.resolved[c.name].run.seed for c in ab.cells} == {0, 1}
    assert all(ab.resolved[c.name].train.steps == 2 for c in ab.cells)


def test_a_typo_in_any_cell_is_reported_before_training(base: Path, tmp_path: Path, capsys) -> None:
    path = ablation_file(tmp_path, """
[grid]
"denoiser.hidden" = [4, "wide"]
"scheduler.plugin" = ["toy", "tyo"]
""")
    ab = read_ablation(path)
    with pytest.raises(SettingsError) as info:
        validate(ab)
    text = str(info.value)
    assert "did you mean 'toy'" in text and "'wide'" in text
    assert main(["ablate", str(path)]) == 2
    assert not (tmp_path / "runs").exists(), "nothing may train when a cell is invalid"
    unknown = ablation_file(tmp_path, "[grdi]\n")
    assert main(["ablate", str(unknown), "--dry-run"]) == 2
    assert "unknown key 'grdi'" in capsys.readouterr().err


def test_dry_run_lists_cells(base: Path, tmp_path: Path, capsys) -> None:
    path = ablation_file(tmp_path, '[grid]\n"denoiser.hidden" = [4, 8]\n')
    assert main(["ablate", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 cells, all valid" in out and "denoiser=hidden=4" not in out and "denoiser.hidden=4" in out
    assert not (tmp_path / "runs").exists()


def test_two_cells_make_a_report_and_a_rerun_skips_them(base: Path, tmp_path: Path) -> None:
    path = ablation_file(tmp_path, '[grid]\n"denoiser.hidden" = [4, 8]\n')
    records = run_ablation(read_ablation(path), progress=False, log=lambda *a: None)
    assert [r["status"] for r in records] == ["done", "done"]
    out = tmp_path / "runs" / "abl"
    md = (out / "report.md").read_text()
    table_rows = [l for l in md.splitlines() if l.startswith("| denoiser.hidden=")]
    assert len(table_rows) == 2
    assert "accuracy" in md.splitlines()[4]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and html.count("<tbody>") == 1
    logged: list[str] = []
    run_ablation(read_ablation(path), progress=False, log=logged.append)
    assert all("skipped" in line for line in logged), logged


def test_a_failed_cell_is_reported_not_fatal(base: Path, tmp_path: Path) -> None:
    path = ablation_file(tmp_path, '[grid]\n"train.lr" = [1e-3, 1e30]\n"train.grad_clip" = [0.0]\n"train.steps" = [30]\n')
    records = run_ablation(read_ablation(path), progress=False, log=lambda *a: None)
    assert [r["status"] for r in records] == ["done", "failed"]
    assert "NonFiniteLoss" in records[1]["error"]
    html = (tmp_path / "runs" / "abl" / "report.html").read_text()
    assert 'class="failed"' in html and "NonFiniteLoss" in html


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium when apt-get works)")
@pytest.mark.slow  # a browser
def test_report_opens_in_headless_chromium(base: Path, tmp_path: Path) -> None:
    path = ablation_file(tmp_path, '[grid]\n"denoiser.hidden" = [4, 8]\n')
    run_ablation(read_ablation(path), progress=False, log=lambda *a: None)
    page = tmp_path / "runs" / "abl" / "report.html"
    cmd = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert 'data-images="2/2"' in dom, dom[:500]
    assert 'data-rows="2"' in dom
