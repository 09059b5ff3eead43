"""The tracker role (issue 39): what the core feeds trackers, from one place.

A recording tracker (registered like a plugin's) keeps everything it is fed;
toy runs trained through the command line show that every metric of
``metrics.jsonl`` reaches it at one run-wide series of steps, that the
settings arrive as parameters and the result files as artifacts, that a
resumed run continues the same tracked run without logging a step twice,
and that a tracker that raises is warned about once and costs the run
nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import modiff
from modiff.cli import main
from modiff.errors import SettingsError
from modiff.runs import RunDir
from modiff.settings import load
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps
from modiff.tracking import STATE_KEY, TrackerWarning

ROLES = ("encoder", "text_embedder", "conditioner", "denoiser")


class RecorderSettings(modiff.ComponentSettings):
    fail_in: str = ""  # the method that raises (a server gone down), or '' for none


class Recorder:
    """A tracker that appends what it is fed to a journal."""

    def __init__(self, journal: list[tuple[Any, ...]], settings: RecorderSettings, plugin: RecorderPlugin):
        self.journal, self.settings, self.plugin = journal, settings, plugin

    def _maybe_fail(self, method: str) -> None:
        if self.settings.fail_in == method:
            raise ConnectionError("server at 127.0.0.1:9 refused the connection")

    def start(self, run: modiff.TrackedRun) -> str:
        self.journal.append(("start", run))
        self._maybe_fail("start")
        return run.run_id or f"tracked-{len([e for e in self.journal if e[0] == 'start'])}"

    def log_params(self, params: Any) -> None:
        self._maybe_fail("log_params")
        self.journal.append(("params", dict(params)))

    def log_scalars(self, step: int, values: Any) -> None:
        self._maybe_fail("log_scalars")
        self.journal.append(("scalars", step, dict(values)))
        if step == self.plugin.interrupt_at:
            self.plugin.interrupt_at = 0
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of the loop

    def log_image(self, step: int, name: str, image: Path) -> None:
        self._maybe_fail("log_image")
        self.journal.append(("image", step, name, image))

    def log_artifacts(self, files: Any) -> None:
        self._maybe_fail("log_artifacts")
        self.journal.append(("artifacts", list(files)))

    def close(self) -> None:
        self.journal.append(("close",))


class RecorderPlugin:
    """Registers ``recorder`` and ``broken`` (a second recorder), each writing to a journal of its own."""

    def __init__(self) -> None:
        self.journals: dict[str, list[tuple[Any, ...]]] = {"recorder": [], "broken": []}
        self.interrupt_at = 0  # log_scalars raises KeyboardInterrupt once at this run-wide step; 0: never

    @modiff.hookimpl
    def register_trackers(self, register: modiff.Register) -> None:
        for name, journal in self.journals.items():
            register(name, lambda s, run, j=journal: Recorder(j, s, self), RecorderSettings)


@pytest.fixture
def trackers(use_registry) -> RecorderPlugin:
    plugin = RecorderPlugin()
    use_registry(plugin_registry(ToyPlugin(), plugin))
    return plugin


def settings_file(tmp_path: Path, name: str, track: dict[str, Any] | None = None, **train: Any) -> Path:
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"].update(name=name, runs_dir=str(tmp_path / "runs"))
    data["encoder"]["trainable"] = True  # a stage before the denoiser's: its steps come first
    data["train"].update(train)
    if track is not None:
        data["track"] = track
    path = tmp_path / f"{name}.toml"
    path.write_text(dumps(data))
    return path


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def expected_scalars(records: list[dict[str, Any]]) -> dict[tuple[int, str], float]:
    """metrics.jsonl as trackers should see it: each stage's steps after those of the stages before it."""
    offsets: dict[str, int] = {}
    last: dict[str, int] = {}
    for r in records:
        if r["stage"] not in offsets:
            offsets[r["stage"]] = sum(last.values())
        last[r["stage"]] = max(last.get(r["stage"], 0), r["step"])
    out = {}
    for r in records:
        at = offsets[r["stage"]] + r["step"]
        if r.get("kind") == "eval":
            out.update({(at, f"eval/{k}"): v for k, v in r["eval"].items() if isinstance(v, (int, float))})
        else:
            out.update({(at, f"{r['stage']}/{k}"): r[k] for k in ("loss", "lr", "steps_per_s")})
            out[(at, f"{r['stage']}/step_seconds")] = 1 / r["steps_per_s"]
    return out


def received_scalars(journal: list[tuple[Any, ...]]) -> list[tuple[int, str, float]]:
    return [(e[1], k, v) for e in journal if e[0] == "scalars" for k, v in e[2].items()]


def test_every_metric_the_settings_pictures_and_result_files_reach_the_trackers(tmp_path: Path, trackers) -> None:
    track = {"plugins": ["recorder"], "group": "grid-a", "tags": {"variant": "wide"}}
    path = settings_file(tmp_path, "tracked", track, eval_every=2, sample_every=2)
    assert main(["train", str(path), "--quiet"]) == 0
    run, journal = tmp_path / "runs" / "tracked", trackers.journals["recorder"]

    (start,) = [e[1] for e in journal if e[0] == "start"]
    assert (start.name, start.path, start.runs_dir) == ("tracked", run, tmp_path / "runs")
    assert (start.run_id, start.resume_after, start.group) == (None, None, "grid-a")
    assert dict(start.tags) == {"variant": "wide"}

    got = received_scalars(journal)
    assert {(s, k): v for s, k, v in got} == pytest.approx(expected_scalars(metrics(run)))
    assert len(got) == len({(s, k) for s, k, _ in got}), "a scalar logged twice at one step"
    assert any(k.startswith("eval/") for _, k, _ in got) and any(k.startswith("encoder/") for _, k, _ in got)

    (params,) = [e[1] for e in journal if e[0] == "params"]
    assert params["train.lr"] == 2e-4 and params["run.name"] == "tracked" and params["denoiser.plugin"] == "toy"
    assert params["sample.prompts"] == json.dumps(TOY_SETTINGS["sample"]["prompts"])

    denoiser_end = max(s for s, k, _ in got if k == "denoiser/loss")
    images = [(e[1], e[2]) for e in journal if e[0] == "image"]
    drawn = [(at, name) for at in (denoiser_end - 2, denoiser_end) for name in ("samples", "trajectory")]
    assert images == drawn, "the grid and the denoising trajectory, each once per step"
    assert all(e[3].is_file() for e in journal if e[0] == "image")

    (files,) = [e[1] for e in journal if e[0] == "artifacts"]
    names = {f.name for f in files}
    assert {"settings.toml", "metrics.jsonl", "final.png", "final-trajectory.png"} <= names, names
    assert journal[-1] == ("close",)
    assert RunDir(run).latest().state[STATE_KEY] == {"recorder": "tracked-1"}


def test_an_untracked_run_keeps_no_tracker_state(tmp_path: Path, trackers) -> None:
    assert main(["train", str(settings_file(tmp_path, "plain")), "--quiet"]) == 0
    assert STATE_KEY not in RunDir(tmp_path / "runs" / "plain").latest().state
    assert "[track]" not in (tmp_path / "runs" / "plain" / "settings.toml").read_text()


def test_a_resumed_run_continues_the_tracked_run_and_logs_no_step_twice(tmp_path: Path, trackers) -> None:
    reference = settings_file(tmp_path, "whole", {"plugins": ["recorder"]}, steps=8, checkpoint_every=3)
    assert main(["train", str(reference), "--quiet"]) == 0
    whole = received_scalars(trackers.journals["recorder"])
    trackers.journals["recorder"].clear()

    # Ctrl-C from inside the tracker at the denoiser's 5th step (after the encoder's 2): the
    # trainer checkpoints that step and stops
    trackers.interrupt_at = 7
    path = settings_file(tmp_path, "cut", {"plugins": ["recorder"]}, steps=8, checkpoint_every=3)
    assert main(["train", str(path), "--quiet"]) != 0
    first = list(trackers.journals["recorder"])
    trackers.journals["recorder"].clear()
    run = RunDir(tmp_path / "runs" / "cut")
    checkpoint = run.latest()
    assert checkpoint.state[STATE_KEY] == {"recorder": "tracked-1"}
    assert main(["train", str(run.path), "--resume", "--quiet"]) == 0
    second = trackers.journals["recorder"]

    (start,) = [e[1] for e in second if e[0] == "start"]
    assert start.run_id == "tracked-1", "the resumed run continues the tracked run kept in the checkpoint"
    assert checkpoint.stage == "denoiser" and start.resume_after == 2 + checkpoint.step
    kept = [x for x in received_scalars(first) if x[0] <= start.resume_after]
    again = received_scalars(second)
    assert min(s for s, _, _ in again) == start.resume_after + 1, "the steps after the checkpoint are logged again"
    combined = kept + again
    by_name: dict[str, list[int]] = {}
    for s, k, _ in combined:
        by_name.setdefault(k, []).append(s)
    for name, steps in by_name.items():
        assert steps == sorted(set(steps)), f"{name}: steps not strictly increasing: {steps}"
    expected: dict[str, list[int]] = {}
    for s, k, _ in whole:
        expected.setdefault(k, []).append(s)
    assert by_name == expected, "a step missing or extra compared with the uninterrupted run"
    assert len([e for e in second if e[0] == "params"]) == 1, "the parameters, once per start"


def final_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {role: load_file(str(RunDir(run).weights(role))) for role in ROLES if RunDir(run).weights(role).is_file()}


@pytest.mark.parametrize("method", ["start", "log_params", "log_scalars", "log_image", "log_artifacts"])
def test_a_tracker_that_raises_warns_once_and_costs_the_run_nothing(tmp_path: Path, trackers, method: str) -> None:
    assert main(["train", str(settings_file(tmp_path, "plain", sample_every=2)), "--quiet"]) == 0
    track = {"plugins": ["broken", "recorder"], "broken": {"fail_in": method}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", str(settings_file(tmp_path, "tracked", track, sample_every=2)), "--quiet"]) == 0
    ours = [w for w in caught if issubclass(w.category, TrackerWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert f"tracker 'broken' failed in {method}" in str(ours[0].message)
    assert "ConnectionError" in str(ours[0].message)
    plain, tracked = final_weights(tmp_path / "runs" / "plain"), final_weights(tmp_path / "runs" / "tracked")
    assert plain.keys() == tracked.keys() and plain
    for role in plain:
        for key in plain[role]:
            assert torch.equal(plain[role][key], tracked[role][key]), (role, key)
    broken, recorder = trackers.journals["broken"], trackers.journals["recorder"]
    assert broken[-1] == ("close",) and broken.count(("close",)) == 1, "the failed tracker is closed once"
    assert not [e for e in broken[broken.index(("close",)) :] if e[0] != "close"], "fed after it failed"
    assert [e for e in recorder if e[0] == "artifacts"], "the other tracker kept everything"


def test_tracker_settings_are_checked_with_the_others(tmp_path: Path, trackers) -> None:
    def problems(track: dict[str, Any]) -> str:
        with pytest.raises(SettingsError) as info:
            load([settings_file(tmp_path, "bad", track)])
        return str(info.value)

    assert "no tracker plugin named 'recordr'; did you mean 'recorder'?" in problems({"plugins": ["recordr"]})
    assert "unknown key 'fail' in [track.recorder]" in problems({"plugins": ["recorder"], "recorder": {"fail": "x"}})
    message = problems({"plugins": [], "recordr": {"fail_in": "start"}})
    assert "unknown key 'recordr' in [track]" in message and "(broken, recorder)" in message
    resolved = load([settings_file(tmp_path, "good", {"plugins": ["recorder", "broken"]})])
    assert list(resolved.trackers) == ["recorder", "broken"]


TRACKER_MODULE = """
import os
from pathlib import Path
import modiff

class Marker:
    def start(self, run):
        (run.path / f"tracked-by-rank-{os.environ.get('RANK', '0')}").write_text("")
        return "marker"
    def log_params(self, params): pass
    def log_scalars(self, step, values):
        Path(os.environ["MARKER_LOG"]).open("a").write(f"{os.environ.get('RANK', '0')} {step}\\n")
    def log_image(self, step, name, image): pass
    def log_artifacts(self, files): pass
    def close(self): pass

@modiff.hookimpl
def register_trackers(register):
    register("marker", lambda settings, run: Marker())
"""


@pytest.mark.slow  # torchrun, two processes
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_a_distributed_run_tracks_from_rank_0_only(tmp_path: Path, toy_subprocess_env, fake_distribution) -> None:
    fake_distribution("fake-marker", "fake_marker", TRACKER_MODULE)
    env = {**toy_subprocess_env, "MODIFF_LOAD_PLUGINS": "fake_toys,fake_marker", "OMP_NUM_THREADS": "1",
           "MARKER_LOG": str(tmp_path / "marker.log")}
    path = settings_file(tmp_path, "two", {"plugins": ["marker"]}, steps=5, batch_size=8, log_every=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "modiff", "train", str(path), "--quiet"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "two"
    assert sorted(p.name for p in run.glob("tracked-by-rank-*")) == ["tracked-by-rank-0"]
    ranks = {line.split()[0] for line in (tmp_path / "marker.log").read_text().splitlines()}
    assert ranks == {"0"}


def test_modiff_plugins_lists_the_trackers(trackers, capsys) -> None:
    assert main(["plugins"]) == 0
    assert "tracker        broken, recorder" in capsys.readouterr().out
