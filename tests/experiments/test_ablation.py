"""`modiff ablate`: grid expansion, repeats, validation before training, resume, verdicts, the report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import Field

import modiff
from modiff.ablation import analyse, read_ablation, run_ablation, validate
from modiff.cli import main
from modiff.errors import SettingsError
from modiff.runs import RunDir
from modiff.stats import A_BETTER, B_BETTER, NOT_SEPARABLE
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


class ScriptedSettings(modiff.ComponentSettings):
    p: float = Field(0.5, ge=0, le=1, description="Chance that a prompt is right (at the last evaluations).")
    ramp: int = Field(1, ge=1, description="The k-th evaluation of a run scores p * min(1, k / ramp).")
    salt: int = 0
    prompts: int = 100
    fail_if_exists: str | None = None


class ScriptedEvaluator:
    """Per-prompt outcomes drawn as Bernoulli(p) from (run seed, salt, call): an
    evaluator whose truth is known, so the verdicts it leads to are too."""

    def __init__(self, settings: ScriptedSettings, context: Any) -> None:
        self.s, self.seed, self.calls = settings, int(context.run.seed), 0

    def evaluate(self, pipeline: Any, *, prompts: Any = None) -> dict[str, Any]:
        if self.s.fail_if_exists and Path(self.s.fail_if_exists).exists():
            raise RuntimeError("scripted failure")
        self.calls += 1
        rng = np.random.default_rng([self.seed, self.s.salt, self.calls])
        p = self.s.p * min(1.0, self.calls / self.s.ramp)
        outcomes = (rng.random(self.s.prompts) < p).astype(int).tolist()
        return {
            "accuracy": float(np.mean(outcomes)),
            "scored": self.s.prompts,
            "per_item": {"ids": [f"prompt {i}" for i in range(self.s.prompts)], "metrics": {"accuracy": outcomes}},
        }


class ScriptedPlugin:
    __name__ = "scripted"

    @modiff.hookimpl
    def register_evaluators(self, register: Any) -> None:
        register("scripted", lambda s, ctx: ScriptedEvaluator(s, ctx), ScriptedSettings, description="known answers")


@pytest.fixture
def base(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), ScriptedPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    data["evaluator"] = {"plugin": "scripted"}
    path = tmp_path / "base.toml"
    path.write_text(dumps(data))
    return path


def ablation_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "abl.toml"
    path.write_text('base = "base.toml"\n' + body)
    return path


def quiet(*_: Any) -> None:
    pass


# -- expansion and validation -----------------------------------------------------------------


def test_grid_times_variants_times_seeds(base: Path, tmp_path: Path) -> None:
    path = ablation_file(
        tmp_path,
        """
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
[[variant]]
name = "once"
seeds = [7]
""",
    )
    ab = read_ablation(path)
    assert len(ab.cells) == 2 * (2 + 2 + 1)
    assert len({c.name for c in ab.cells}) == len(ab.cells)
    assert ab.groups == [
        "plain,denoiser.hidden=4",
        "wide-text,denoiser.hidden=4",
        "once,denoiser.hidden=4",
        "plain,denoiser.hidden=8",
        "wide-text,denoiser.hidden=8",
        "once,denoiser.hidden=8",
    ]
    assert "plain,denoiser.hidden=4,seed=1" in {c.name for c in ab.cells}
    assert "once,denoiser.hidden=8" in {c.name for c in ab.cells}, "one seed: the run is named after its cell"
    validate(ab)
    wide = [c for c in ab.cells if c.name.startswith("wide-text")]
    assert all(ab.resolved[c.name].components["text_embedder"].params.dim == 16 for c in wide)
    assert {ab.resolved[c.name].run.seed for c in ab.cells} == {0, 1, 7}
    assert all(ab.resolved[c.name].train.steps == 2 for c in ab.cells)


def test_seed_settings_write_each_repeat_seed_to_every_named_key(base: Path, tmp_path: Path) -> None:
    path = ablation_file(tmp_path, 'seeds = [3, 4]\nseed_settings = ["run.seed", "data.seed"]\n')
    ab = read_ablation(path)
    validate(ab)
    for cell in ab.cells:
        resolved = ab.resolved[cell.name]
        assert resolved.run.seed == cell.seed == resolved.components["data"].params.seed


class NoopTrackerPlugin:
    """A tracker that records nothing: enough for ``[track] plugins`` to name one."""

    __name__ = "noop-tracker"

    @modiff.hookimpl
    def register_trackers(self, register: Any) -> None:
        register("noop", lambda settings, run: None, modiff.NoSettings)


def test_a_tracked_grid_tells_each_run_its_experiment_variant_and_seed(
    base: Path, tmp_path: Path, use_registry
) -> None:
    use_registry(plugin_registry(ToyPlugin(), ScriptedPlugin(), NoopTrackerPlugin(), entry_points=True))
    grid = 'seeds = [0, 1]\n[[variant]]\nname = "a"\n[[variant]]\nname = "b"\nset = { "train.lr" = 0.01 }\n'
    untracked = read_ablation(ablation_file(tmp_path, grid))
    validate(untracked)
    assert all("track" not in r.to_dict() for r in untracked.resolved.values()), "an untracked run reads as before"

    data = json.loads(json.dumps(TOY_SETTINGS)) | {"track": {"plugins": ["noop"], "tags": {"team": "vision"}}}
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    base.write_text(dumps(data))
    tracked = read_ablation(ablation_file(tmp_path, grid))
    validate(tracked)
    seen = set()
    for cell in tracked.cells:
        track = tracked.resolved[cell.name].settings.track
        assert track.group == "abl", "the grid is one experiment, named after the ablation"
        assert track.tags == {"team": "vision", "variant": cell.group, "seed": str(cell.seed)}
        seen.add((track.tags["variant"], track.tags["seed"]))
    assert seen == {("a", "0"), ("a", "1"), ("b", "0"), ("b", "1")}


def test_a_typo_in_any_cell_is_reported_before_training(base: Path, tmp_path: Path, capsys) -> None:
    path = ablation_file(
        tmp_path,
        """
[grid]
"denoiser.hidden" = [4, "wide"]
"scheduler.plugin" = ["toy", "tyo"]
""",
    )
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


def test_a_file_that_is_not_text_is_a_clear_error(tmp_path: Path, capsys) -> None:
    binary = tmp_path / "weights.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(SettingsError, match="cannot read ablation file"):
        read_ablation(binary)
    assert main(["ablate", str(binary), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "weights.toml" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[variant]]\nname = "x"\n[[compare]]\na = "x"\nb = "y"\nmetrics = ["accuracy"]\n', "compare[0].b = 'y'"),
        (
            '[[variant]]\nname = "pixel"\n[[variant]]\nname = "latent"\n'
            '[[compare]]\na = "latnet"\nb = "pixel"\nmetrics = ["accuracy"]\n',
            "did you mean 'latent'",
        ),
        (
            '[[variant]]\nname = "x"\n[[variant]]\nname = "y"\n'
            '[[compare]]\na = "x"\nb = "y"\nmetrics = ["seconds_to_threshold"]\n',
            "has no [threshold]",
        ),
        ('[[variant]]\nname = "x"\n[[variant]]\nname = "y"\n[[compare]]\na = "x"\nb = "y"\nmetrics = []\n', "metrics"),
        ("seeds = [1, 1]\n", "repeat a seed"),
    ],
)
def test_compare_entries_are_checked_when_the_file_is_read(base: Path, tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_ablation(ablation_file(tmp_path, body))


def test_a_verdict_cannot_be_written_in_the_file(base: Path, tmp_path: Path, capsys) -> None:
    path = ablation_file(
        tmp_path,
        """
[[variant]]
name = "x"
[[variant]]
name = "y"
[[compare]]
a = "x"
b = "y"
metrics = ["accuracy"]
verdict = "a better"
""",
    )
    assert main(["ablate", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'compare.0.verdict'" in err and "verdicts are computed by the report" in err


def test_dry_run_lists_cells_and_runs(base: Path, tmp_path: Path, capsys) -> None:
    path = ablation_file(tmp_path, 'seeds = [0, 1, 2]\n[grid]\n"denoiser.hidden" = [4, 8]\n')
    assert main(["ablate", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 cells x 3 seeds = 6 runs, all valid" in out
    assert "denoiser=hidden=4" not in out and "denoiser.hidden=4" in out and "seeds 0, 1, 2" in out
    assert not (tmp_path / "runs").exists()


# -- running, resuming, failing ---------------------------------------------------------------


def test_two_cells_make_a_report_and_a_rerun_skips_them(base: Path, tmp_path: Path) -> None:
    path = ablation_file(tmp_path, '[grid]\n"denoiser.hidden" = [4, 8]\n')
    records = run_ablation(read_ablation(path), progress=False, log=quiet)
    assert [r["status"] for r in records] == ["done", "done"]
    out = tmp_path / "runs" / "abl"
    md = (out / "report.md").read_text()
    table_rows = [line for line in md.splitlines() if line.startswith("| denoiser.hidden=")]
    assert len(table_rows) == 2 + 2, "the compact table and the every-run table"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and 'class="compact"' in html
    assert (out / "denoiser.hidden=4" / "evaluation.json").is_file()
    logged: list[str] = []
    run_ablation(read_ablation(path), progress=False, log=logged.append)
    assert len(logged) == 2 and all("skipped" in line for line in logged), logged


def test_a_half_finished_grid_already_has_a_valid_report(base: Path, tmp_path: Path) -> None:
    """The report is rewritten as each run ends: when the second run starts, the
    report names the first as finished and the second as not finished yet."""
    path = ablation_file(tmp_path, '[grid]\n"denoiser.hidden" = [4, 8]\n')
    out = tmp_path / "runs" / "abl"
    seen: dict[str, Any] = {}

    def log(line: str) -> None:
        if line.startswith("[2/2]") and not seen:
            seen["summary"] = json.loads((out / "summary.json").read_text())
            seen["md"] = (out / "report.md").read_text()
            seen["html"] = (out / "report.html").read_text()

    run_ablation(read_ablation(path), progress=False, log=log)
    summary = seen["summary"]
    assert summary["runs_done"] == 1 and summary["pending"] == ["denoiser.hidden=8"]
    cells = [(c["name"], c["runs_done"]) for c in summary["cells"]]
    assert cells == [("denoiser.hidden=4", 1), ("denoiser.hidden=8", 0)]
    assert "1 run(s) not finished yet" in seen["md"] and "- `denoiser.hidden=8`" in seen["md"]
    assert "not finished yet" in seen["html"] and seen["html"].rstrip().endswith("</html>")
    final = json.loads((out / "summary.json").read_text())
    assert final["pending"] == [] and "not finished yet" not in (out / "report.md").read_text()


def test_a_resumed_grid_with_seeds_runs_only_what_is_not_finished(
    base: Path, tmp_path: Path, run_counting: Callable[[Path], tuple[list[str], list[str]]]
) -> None:
    """Three seeds of two cells; one run fails and one is interrupted (no record);
    the rerun trains exactly those two and skips the four finished pairs."""
    flag = tmp_path / "fail-now"
    path = ablation_file(
        tmp_path,
        f"""
seeds = [0, 1, 2]
[[variant]]
name = "steady"
[[variant]]
name = "flaky"
set = {{ "evaluator.fail_if_exists" = "{flag}" }}
""",
    )
    flag.touch()
    records = run_ablation(read_ablation(path), progress=False, log=quiet)
    assert [r["status"] for r in records] == ["done"] * 3 + ["failed"] * 3
    out = tmp_path / "runs" / "abl"
    report = (out / "report.html").read_text()
    assert "3 run(s) failed" in report and "scripted failure" in report
    flag.unlink()
    (out / "flaky,seed=2" / "cell.json").unlink()  # as if interrupted before its record was written
    (out / "steady,seed=1" / "cell.json").unlink()
    trained, logged = run_counting(path)
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*/cell.json"))]
    assert sorted(trained) == ["flaky,seed=0", "flaky,seed=1", "flaky,seed=2", "steady,seed=1"]
    assert sum("finished earlier, skipped" in line for line in logged) == 2
    assert sum("failed earlier" in line and "retrying" in line for line in logged) == 2
    assert [r["status"] for r in records] == ["done"] * 6
    summary = json.loads((out / "summary.json").read_text())
    assert [(c["name"], c["runs_done"], c["runs"]) for c in summary["cells"]] == [("steady", 3, 3), ("flaky", 3, 3)]


def test_an_interruption_stops_the_grid_and_is_not_a_failure(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the second run: the grid stops (exit 130), the first run is kept,
    the second has no record (it resumes rather than counting as failed)."""
    from modiff import workflows
    from modiff.training import TrainingInterrupted

    path = ablation_file(tmp_path, '[grid]\n"denoiser.hidden" = [4, 8, 16]\n')
    real = workflows.train_run
    calls: list[str] = []

    def interrupted_second(resolved: Any, run: Any, **kwargs: Any) -> Any:
        calls.append(run.path.name)
        if len(calls) == 2:
            raise TrainingInterrupted("interrupted during denoiser at step 1; checkpoint saved")
        return real(resolved, run, **kwargs)

    monkeypatch.setattr(workflows, "train_run", interrupted_second)
    assert main(["ablate", str(path), "--quiet"]) == 130
    out = tmp_path / "runs" / "abl"
    assert (out / "denoiser.hidden=4" / "cell.json").is_file()
    assert not (out / "denoiser.hidden=8" / "cell.json").exists()
    assert len(calls) == 2, "nothing runs after the stop"
    assert "denoiser.hidden=4" in (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())  # the stopped grid's report is valid and says what is left
    assert summary["runs_done"] == 1 and summary["pending"] == ["denoiser.hidden=8", "denoiser.hidden=16"]
    assert "2 run(s) not finished yet" in (out / "report.md").read_text()


def test_ctrl_c_says_so_and_how_to_go_on(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare KeyboardInterrupt has no message of its own: the error names Ctrl-C, not "()"."""
    from modiff import workflows

    path = ablation_file(tmp_path, '[grid]\n"denoiser.hidden" = [4, 8]\n')

    def ctrl_c(resolved: Any, run: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(workflows, "train_run", ctrl_c)
    assert main(["ablate", str(path), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "interrupted (Ctrl-C)" in err and f"modiff ablate {path}" in err, err


def test_a_failed_cell_is_reported_not_fatal(base: Path, tmp_path: Path) -> None:
    path = ablation_file(
        tmp_path, '[grid]\n"train.lr" = [1e-3, 1e30]\n"train.grad_clip" = [0.0]\n"train.steps" = [30]\n'
    )
    records = run_ablation(read_ablation(path), progress=False, log=quiet)
    assert [r["status"] for r in records] == ["done", "failed"]
    assert "NonFiniteLoss" in records[1]["error"]
    html = (tmp_path / "runs" / "abl" / "report.html").read_text()
    assert 'class="failed"' in html and "NonFiniteLoss" in html


# -- verdicts, computed ------------------------------------------------------------------------


COMPARISONS = """
seeds = [0, 1, 2]
[set]
"train.steps" = 40
"train.eval_every" = 20
[[variant]]
name = "good"
set = { "evaluator.p" = 0.9, "evaluator.salt" = 1 }
[[variant]]
name = "bad"                            # trains five times as long and never gets there
set = { "evaluator.p" = 0.3, "evaluator.salt" = 2, "train.steps" = 200 }
[[variant]]
name = "same-1"
set = { "evaluator.p" = 0.5, "evaluator.salt" = 3 }
[[variant]]
name = "same-2"
set = { "evaluator.p" = 0.5, "evaluator.salt" = 4 }
[metrics]
accuracy = "right prompts"
[threshold]
metric = "accuracy"
value = 0.8
[[compare]]
claim = "good beats bad"
a = "good"
b = "bad"
metrics = ["accuracy"]
[[compare]]
claim = "the other way round"
a = "bad"
b = "good"
metrics = ["accuracy", "seconds_to_threshold"]
[[compare]]
claim = "one distribution, two cells"
a = "same-1"
b = "same-2"
metrics = ["accuracy"]
"""


def test_verdicts_are_computed_from_the_runs(base: Path, tmp_path: Path) -> None:
    """Cells whose per-prompt truth is known: clearly different ones are separated
    (in the direction of the data), two drawn from one distribution are not."""
    path = ablation_file(tmp_path, COMPARISONS)
    records = run_ablation(read_ablation(path), progress=False, log=quiet)
    assert all(r["status"] == "done" for r in records)
    assert all([p["step"] for p in r["curve"]] == [20, 40] for r in records if r["group"] != "bad"), "every 20 steps"
    assert all(len(r["curve"]) == 10 for r in records if r["group"] == "bad")
    out = tmp_path / "runs" / "abl"
    summary = json.loads((out / "summary.json").read_text())
    results = [[(r["metric"], r["verdict"]) for r in c["results"]] for c in summary["comparisons"]]
    assert results == [
        [("accuracy", A_BETTER)],
        [("accuracy", B_BETTER), ("seconds_to_threshold", B_BETTER)],
        [("accuracy", NOT_SEPARABLE)],
    ]
    good_vs_bad = summary["comparisons"][0]["results"][0]
    assert good_vs_bad["paired"] and 0.4 < good_vs_bad["difference"]["low"] <= good_vs_bad["difference"]["value"]
    cost = summary["comparisons"][1]["results"][1]
    assert cost["note"] == "a did not reach it within its budget"
    good = next(c for c in summary["cells"] if c["name"] == "good")
    est = good["metrics"]["accuracy"]
    assert est["low"] < est["value"] < est["high"] and est["seeds"] == 3
    assert good["metrics"]["seconds_to_threshold"]["reached"] == 3
    md = (out / "report.md").read_text()
    verdict_rows = [line for line in md.split("## Verdicts")[1].split("\n\n")[1].splitlines() if line.startswith("| ")]
    assert len(verdict_rows) == 1 + 3
    assert "| good beats bad | good | bad | a better: +" in md
    assert "right prompts" in md and "seconds to right prompts ≥ 0.8" in md
    assert (out / "curve-accuracy.svg").is_file()
    forest = (out / "verdicts.svg").read_text()  # every comparison's difference, one panel per metric
    assert all(f">{text}<" in forest for text in ("good − bad", "bad − good", "same-1 − same-2", "right prompts"))


def _record(
    group: str, seed: int, outcomes: list[int], curve: list[tuple[float, float]], budget: float
) -> dict[str, Any]:
    ids = [f"p{i}" for i in range(len(outcomes))]
    return {
        "name": f"{group},seed={seed}",
        "group": group,
        "seed": seed,
        "status": "done",
        "train_seconds": budget,
        "evaluation": {
            "one_object_accuracy": float(np.mean(outcomes)),
            "per_item": {"ids": ids, "metrics": {"one_object_accuracy": outcomes}},
        },
        "curve": [
            {"step": 100 * (k + 1), "train_seconds": s, "eval": {"one_object_accuracy": v}}
            for k, (s, v) in enumerate(curve)
        ],
    }


def test_cost_at_equal_quality_decides_where_equal_steps_do_not(base: Path, tmp_path: Path) -> None:
    """The latent-vs-pixel reading: at the end both cells are about as accurate, but
    one got to 0.8 in a fraction of the training seconds."""
    path = ablation_file(
        tmp_path,
        """
seeds = [0, 1, 2]
[[variant]]
name = "latent"
[[variant]]
name = "pixel"
[threshold]
metric = "one_object_accuracy"
value = 0.8
[[compare]]
a = "latent"
b = "pixel"
metrics = ["one_object_accuracy", "seconds_to_threshold"]
""",
    )
    ab = read_ablation(path)
    rng = np.random.default_rng(0)
    records = []
    for seed in range(3):
        finals = (rng.random(100) < 0.85).astype(int).tolist()
        records.append(_record("latent", seed, finals, [(100 + seed, 0.5), (200 + seed, 0.9), (300, 0.86)], 300))
    for seed in range(3):
        finals = (rng.random(100) < 0.85).astype(int).tolist()
        records.append(
            _record("pixel", seed, finals, [(900, 0.3), (1800, 0.7), (2700 + 10 * seed, 0.85)], 2700 + 10 * seed)
        )
    summary = analyse(ab, records)
    accuracy, cost = summary["comparisons"][0]["results"]
    assert accuracy["verdict"] == NOT_SEPARABLE
    assert cost["verdict"] == A_BETTER and cost["difference"]["high"] < -1000
    latent = summary["cells"][0]["metrics"]["seconds_to_threshold"]
    expected = [100 + seed + 100 * (0.3 / 0.4) for seed in range(3)]  # interpolated between the evaluations
    assert latent["per_seed"] == pytest.approx(expected) and latent["value"] == pytest.approx(np.mean(expected))


# -- the report in a browser -------------------------------------------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(
    chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium when apt-get works)"
)
@pytest.mark.slow  # a browser
def test_report_opens_in_headless_chromium(base: Path, tmp_path: Path) -> None:
    path = ablation_file(tmp_path, COMPARISONS)
    run_ablation(read_ablation(path), progress=False, log=quiet)
    page = tmp_path / "runs" / "abl" / "report.html"
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    # 4 sample grids, the verdicts' intervals, one learning curve (accuracy; the cost has none of its own), the loss
    images = int(dom.split('data-images="')[1].split("/")[1].split('"')[0])
    assert images == 4 + 1 + 1 + 1, dom[:500]
    assert f'data-images="{images}/{images}"' in dom, "every image and plot loaded"
    assert 'data-plots="3"' in dom and 'data-comparisons="3"' in dom and 'data-cells="4"' in dom
    width = int(dom.split('data-width="')[1].split('"')[0])
    assert width <= 1400, f"the page is {width} px wide in a 1400 px window"


# -- a driver's jobs and runs written by other processes ----------------------------------------------


def test_a_run_another_process_is_writing_is_waited_for_not_failed(base: Path, tmp_path: Path) -> None:
    """A run whose lock a live process holds (a job a killed driver left behind)
    is waited for, then trained: not recorded as failed."""
    path = ablation_file(tmp_path, '[grid]\n"denoiser.hidden" = [4]\n')
    run = RunDir(tmp_path / "runs" / "abl" / "denoiser.hidden=4")
    held, release = threading.Event(), threading.Event()

    def other_writer() -> None:
        with run.lock():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_writer)
    thread.start()
    assert held.wait(10)
    logged: list[str] = []

    def log(line: str) -> None:
        logged.append(line)
        if "waiting for" in line:  # the other writer finishes a moment later
            threading.Timer(1.0, release.set).start()

    records = run_ablation(read_ablation(path), progress=False, log=log)
    release.set()
    thread.join()
    assert [r["status"] for r in records] == ["done"], records[0].get("error")
    assert any(f"waiting for process {os.getpid()}" in line for line in logged), logged


@pytest.mark.slow  # subprocesses that train for seconds
def test_a_killed_drivers_jobs_end_with_it_and_a_rerun_reports_no_failure(
    tmp_path: Path, toy_subprocess_env: dict[str, str]
) -> None:
    """SIGKILL of a `modiff ablate --jobs 2` driver only: its jobs end with it
    (they do not train on, orphaned), and the same command run again at once
    finishes every run and reports no failure."""
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    data["train"].update(steps=2500, checkpoint_every=100)  # 12 s or more a run: the kill lands mid-training
    (tmp_path / "base.toml").write_text(dumps(data))
    path = ablation_file(tmp_path, 'share_stages = false\n[grid]\n"denoiser.hidden" = [4, 8]\n')  # both at once
    command = [sys.executable, "-m", "modiff", "ablate", str(path), "--quiet", "--jobs", "2"]
    env = dict(toy_subprocess_env, OMP_NUM_THREADS="1")
    runs = [RunDir(tmp_path / "runs" / "abl" / f"denoiser.hidden={h}") for h in (4, 8)]

    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not all(run.writer() for run in runs):
        assert driver.poll() is None and time.monotonic() < deadline, "the jobs never started"
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 5  # a job signalled ends at once; an orphan would train for seconds more
    while any(run.writer() for run in runs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(run.writer() for run in runs), "the jobs train on after their driver was killed"

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "failed" not in again.stdout + again.stderr
    records = [json.loads((run.path / "cell.json").read_text()) for run in runs]
    assert [r["status"] for r in records] == ["done", "done"]
    assert "failed" not in (tmp_path / "runs" / "abl" / "report.md").read_text()


# -- what benchmarks/learning_curve.py measured: curves, a load-free time axis, a final evaluation --------


CURVES_AND_TIMING = """
seeds = [0, 1]
[set]
"train.steps" = 4
"train.eval_every" = 2
"evaluator.prompts" = 10
[[variant]]
name = "small"
set = { "denoiser.hidden" = 4 }
[[variant]]
name = "big"
set = { "denoiser.hidden" = 96 }
[[compare]]
a = "big"
b = "small"
metrics = ["accuracy"]
[timing]
rounds = 1
steps = 1
[final_evaluation]
prompts = 30
"""


def test_curves_timing_and_a_final_evaluation_on_more_prompts(base: Path, tmp_path: Path) -> None:
    """Issue 36: the learning curves against seconds and steps, every cell's training step
    timed interleaved in one process ([timing]) for a load-free axis, and the final
    evaluation on more prompts than the curve's ([final_evaluation]), still paired."""
    path = ablation_file(tmp_path, CURVES_AND_TIMING)
    logged: list[str] = []
    records = run_ablation(read_ablation(path), progress=False, log=logged.append)
    out = tmp_path / "runs" / "abl"
    assert all(r["status"] == "done" for r in records)
    assert all([p["eval"]["scored"] for p in r["curve"]] == [10, 10] for r in records), "the curve: 10 prompts"
    assert all(len(r["evaluation"]["per_item"]["ids"]) == 30 for r in records), "the final evaluation: 30"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["comparisons"][0]["results"][0]["paired"]
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["cells"]) == {"small", "big"} and timing["cells"]["big"]["seconds_per_step"]["denoiser"] > 0
    costs = summary["timing"]
    assert costs["reference"] == "small" and costs["cells"]["small"]["denoiser_relative"] == 1.0
    assert costs["cells"]["big"]["denoiser_params"] > costs["cells"]["small"]["denoiser_params"]
    md = (out / "report.md").read_text()
    assert "step cost (× small)" in md and "load-free s" in md and "timed interleaved" in md
    svg = (out / "curve-accuracy.svg").read_text()
    assert all(f">{axis}" in svg for axis in ("training seconds", "denoiser steps", "load-free seconds"))
    logged.clear()  # a second run measures nothing again: the same cells under the same settings
    run_ablation(read_ablation(path), progress=False, log=logged.append)
    assert not any("timing every cell" in line for line in logged), logged
    # a final evaluation asked for otherwise evaluates the finished runs again, training nothing
    path.write_text(path.read_text().replace("prompts = 30", "prompts = 20"))
    again = run_ablation(read_ablation(path), progress=False, log=logged.append)
    assert all(len(r["evaluation"]["per_item"]["ids"]) == 20 for r in again)
    assert [r["curve"] for r in again] == [r["curve"] for r in records], "the same training, not a new one"
    assert sum("evaluated again: [final_evaluation] changed" in line for line in logged) == 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[final_evaluation]\nprompt = 30\n", "[final_evaluation]"),
        ("[final_evaluation]\nprompts = \"many\"\n", "prompts"),
        ("[timing]\nround = 3\n", "unknown key 'timing.round'"),
    ],
)
def test_final_evaluation_and_timing_are_checked_before_training(
    base: Path, tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(SettingsError) as err:
        validate(read_ablation(ablation_file(tmp_path, body)))
    assert message in str(err.value)
