"""The TensorBoard tracker, read back with TensorBoard's own event reader.

Toy runs (modiff.testing.toys) trained through the command line with
``[track] plugins = ["tensorboard"]``: ``EventAccumulator`` must return every
scalar of ``metrics.jsonl`` and every picture at its step, and after a real
SIGKILL and ``--resume`` every tag's steps must read as one series, strictly
increasing, with no step twice and none missing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

import modiff_tensorboard
from modiff.cli import main
from modiff.errors import SettingsError
from modiff.runs import RunDir
from modiff.settings import load
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def registry(use_registry) -> None:
    use_registry(plugin_registry(ToyPlugin(), modiff_tensorboard))


def settings_file(tmp_path: Path, name: str, **train: Any) -> Path:
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"].update(name=name, runs_dir=str(tmp_path / "runs"))
    data["encoder"]["trainable"] = True  # a stage before the denoiser's
    data["train"].update({"eval_every": 2, "sample_every": 2, **train})
    data["track"] = {"plugins": ["tensorboard"]}
    path = tmp_path / f"{name}.toml"
    path.write_text(dumps(data))
    return path


def events(folder: Path) -> EventAccumulator:
    reader = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    reader.Reload()
    return reader


def scalar_steps(reader: EventAccumulator) -> dict[str, list[int]]:
    return {tag: [e.step for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def expected(run: Path) -> dict[str, dict[int, float]]:
    """metrics.jsonl by tag and run-wide step (each stage's steps after the stages before it)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    offsets: dict[str, int] = {}
    ends: dict[str, int] = {}
    out: dict[str, dict[int, float]] = {}
    for r in records:
        offsets.setdefault(r["stage"], sum(ends.values()))
        ends[r["stage"]] = max(ends.get(r["stage"], 0), r["step"])
        at = offsets[r["stage"]] + r["step"]
        if r.get("kind") == "eval":
            values = {f"eval/{k}": v for k, v in r["eval"].items() if isinstance(v, (int, float))}
        else:
            values = {f"{r['stage']}/{k}": r[k] for k in ("loss", "lr", "steps_per_s")}
        for tag, v in values.items():
            out.setdefault(tag, {})[at] = v
    return out


def test_the_event_reader_returns_every_scalar_and_picture_at_its_step(tmp_path: Path, registry) -> None:
    assert main(["train", str(settings_file(tmp_path, "tb", steps=6)), "--quiet"]) == 0
    run = tmp_path / "runs" / "tb"
    reader = events(run)
    want = expected(run)
    got = {tag: {e.step: e.value for e in reader.Scalars(tag)} for tag in reader.Tags()["scalars"]}
    assert set(want) <= set(got) and "encoder/loss" in got and "eval/accuracy" in got
    for tag, values in want.items():
        assert got[tag] == pytest.approx(values, rel=1e-6), tag
    encoder_steps = TOY_SETTINGS["train"]["encoder"]["steps"]
    assert sorted(got["denoiser/loss"]) == [encoder_steps + s for s in range(1, 7)]
    assert got["denoiser/step_seconds"].keys() == got["denoiser/loss"].keys()
    pictured = [encoder_steps + s for s in (2, 4, 6)]  # sample_every = 2; the final grid is step 6's
    for tag in ("samples", "trajectory"):
        images = reader.Images(tag)
        assert [i.step for i in images] == pictured, tag
        assert all(i.width > 0 and i.height > 0 for i in images)
    assert "settings/text_summary" in reader.Tags()["tensors"]
    logdir = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "runs"))  # what `tensorboard --logdir runs/` reads
    assert set(logdir.Runs()) == {"tb"}, "one TensorBoard run per modiff run, named after its folder"
    settings_table = reader.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "`train.lr`" in settings_table and "`run.name` | `tb`" in settings_table


def test_events_go_where_the_settings_say_inside_the_run(tmp_path: Path, registry) -> None:
    path = settings_file(tmp_path, "tb", steps=2)
    path.write_text(path.read_text() + '\n[track.tensorboard]\nfolder = "tb-events"\n')
    assert main(["train", str(path), "--quiet"]) == 0
    run = RunDir(tmp_path / "runs" / "tb")
    assert list((run.path / "tb-events").glob("events.out.tfevents.*")) and not list(run.path.glob("events.*"))
    assert run.latest().state["trackers"] == {"tensorboard": "tb/tb-events"}
    path.write_text(path.read_text().replace('folder = "tb-events"', 'folder = "../elsewhere"'))
    with pytest.raises(SettingsError, match="inside the run folder"):
        load([path])


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from _kill_after import arm
import modiff_tensorboard
from modiff.cli import main
from modiff.plugins import set_registry
from modiff.testing import plugin_registry
from modiff.testing.toys import ToyPlugin

set_registry(plugin_registry(ToyPlugin(), modiff_tensorboard))
pattern, count, *argv = sys.argv[1:]
if int(count):
    arm(pattern, int(count))
sys.exit(main(argv))
"""


def drive(tmp_path: Path, pattern: str, count: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``modiff ARGS`` in a process of its own with the toys and this tracker, SIGKILLed
    the ``count``-th time a file matching ``pattern`` is put in place (0: never)."""
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER).format(tests=str(REPO / "tests" / "faults")))
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(driver), pattern, str(count), *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # three training processes
def test_resume_after_sigkill_reads_as_one_series_without_repeats_or_gaps(tmp_path: Path) -> None:
    steps = {"steps": 8, "checkpoint_every": 3, "sample_every": 4, "eval_every": 4}
    whole = drive(tmp_path, "-", 0, "train", str(settings_file(tmp_path, "whole", **steps)), "--quiet")
    assert whole.returncode == 0, whole.stderr[-3000:]

    # killed right after the denoiser's step-4 grid is written: the checkpoint holds step 3,
    # the events hold step 4 already
    path = settings_file(tmp_path, "killed", **steps)
    first = drive(tmp_path, "step-000004.png", 1, "train", str(path), "--quiet")
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    run = tmp_path / "runs" / "killed"
    checkpoint = RunDir(run).latest()
    encoder_steps = TOY_SETTINGS["train"]["encoder"]["steps"]
    assert (checkpoint.stage, checkpoint.step) == ("denoiser", 3)
    assert max(scalar_steps(events(run))["denoiser/loss"]) == encoder_steps + 4, "nothing logged past the checkpoint"

    again = drive(tmp_path, "-", 0, "train", str(run), "--resume", "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list(run.glob("events.out.tfevents.*"))) == 2, "the resumed attempt writes a file of its own"

    resumed, reference = events(run), events(tmp_path / "runs" / "whole")
    got, want = scalar_steps(resumed), scalar_steps(reference)
    for tag, tag_steps in got.items():
        assert tag_steps == sorted(set(tag_steps)), f"{tag}: not strictly increasing or repeated: {tag_steps}"
    assert got == want, "a step missing or extra compared with the uninterrupted run"
    for tag in ("denoiser/loss", "encoder/loss", "eval/accuracy"):  # a resume ends bit for bit where a whole run does
        assert [e.value for e in resumed.Scalars(tag)] == [e.value for e in reference.Scalars(tag)], tag
    for tag in ("samples", "trajectory"):
        assert [i.step for i in resumed.Images(tag)] == [i.step for i in reference.Images(tag)], tag
    assert RunDir(run).latest().state["trackers"] == {"tensorboard": "killed"}


@pytest.mark.slow  # two training processes
def test_a_kill_right_after_a_checkpoint_that_is_an_evaluation_step_leaves_no_gap(tmp_path: Path) -> None:
    """The evaluation and the grid of a step are drawn before that step's checkpoint is
    committed: a kill right after the commit finds them logged, one before it retakes them."""
    steps = {"steps": 6, "checkpoint_every": 3, "sample_every": 3, "eval_every": 3}
    whole = drive(tmp_path, "-", 0, "train", str(settings_file(tmp_path, "whole", **steps)), "--quiet")
    assert whole.returncode == 0, whole.stderr[-3000:]
    path = settings_file(tmp_path, "killed", **steps)
    first = drive(tmp_path, "LATEST", 2, "train", str(path), "--quiet")  # the encoder's end, then denoiser step 3
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    run = tmp_path / "runs" / "killed"
    assert (RunDir(run).latest().stage, RunDir(run).latest().step) == ("denoiser", 3)
    again = drive(tmp_path, "-", 0, "train", str(run), "--resume", "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    got, want = events(run), events(tmp_path / "runs" / "whole")
    assert scalar_steps(got) == scalar_steps(want)
    assert [i.step for i in got.Images("samples")] == [i.step for i in want.Images("samples")]
    evals = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if "eval" in line]
    assert evals == [3, 6], "metrics.jsonl has every evaluation too"
