"""Choosing where a grid's runs execute (``--launcher``, ``[launcher]``) and the
launcher role's plumbing, fast: a launcher registered through the hook as a
third party's is handed one job per run, with the threads every launcher
gives a run, the node it reports lands on the run's record and what it says
through its context's ``log`` is in the driver's output; a mistyped
launcher, a missing distribution or option, and a worker that cannot see the
runs folder are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import modiff
from modiff import ablation as ablation_module
from modiff.ablation import read_ablation, run_ablation
from modiff.cli import main
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


def grid(tmp_path: Path, extra: str = "") -> Path:
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    (tmp_path / "toy.toml").write_text(dumps(data))
    path = tmp_path / "abl.toml"
    path.write_text(f'base = "toy.toml"\n[grid]\n"denoiser.hidden" = [4, 8]\n{extra}')
    return path


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_mistyped_launcher_gets_the_nearest_and_the_installed_ones(tmp_path: Path, capsys, use_registry) -> None:
    use_registry(plugin_registry(ToyPlugin()))
    err = one_line_error(capsys, ["ablate", str(grid(tmp_path)), "--launcher", "locl"])
    assert "'locl' is not an installed launcher (did you mean 'local'?); installed: local" in err, err
    assert not (tmp_path / "runs").exists(), "nothing is written before the launcher is known"


def test_a_launcher_whose_distribution_is_missing_says_what_to_install(tmp_path: Path, capsys, use_registry) -> None:
    use_registry(plugin_registry(ToyPlugin()))
    path = grid(tmp_path, '[launcher]\nname = "ray"\n')
    err = one_line_error(capsys, ["ablate", str(path), "--dry-run"])
    assert f"{path}: [launcher] name = 'ray'" in err and "pip install modiff-launcher-ray" in err, err


def test_an_option_the_launcher_does_not_take_is_named(tmp_path: Path, capsys, use_registry) -> None:
    use_registry(plugin_registry(ToyPlugin()))
    err = one_line_error(capsys, ["ablate", str(grid(tmp_path, '[launcher]\nname = "local"\nworkers = 3\n')),
                                  "--jobs", "2"])
    assert "[launcher] for 'local': workers: Extra inputs are not permitted" in err, err


def test_a_job_on_a_node_that_cannot_see_the_runs_folder_fails_at_once(tmp_path: Path, capsys, use_registry) -> None:
    use_registry(plugin_registry(ToyPlugin()))
    err = one_line_error(capsys, ["ablate", str(grid(tmp_path)), "--run", "denoiser.hidden=4"])
    assert f"the runs folder {tmp_path / 'runs' / 'abl'} does not exist on " in err, err
    assert "runs_dir must be on storage every node mounts" in err, err


# A stand-in for a run's job: writes the record a finished run writes and says how it was started.
FAKE_JOB = """
import json, os, pathlib, sys
run = pathlib.Path(sys.argv[1]); run.mkdir(parents=True, exist_ok=True)
(run / "started.json").write_text(json.dumps({"argv": sys.argv[2:], "omp": os.environ.get("OMP_NUM_THREADS")}))
(run / "cell.json").write_text(json.dumps({"name": run.name, "group": run.name, "changes": {}, "seed": 0,
                                           "status": "done"}))
"""


class FakeRun:
    def __init__(self, process: subprocess.Popen[bytes]):
        self.process, self.node, self.error = process, "node-a", None

    def poll(self) -> int | None:
        return self.process.poll()

    def cancel(self) -> None:
        self.process.terminate()


class FakeLauncher:
    """A third party's launcher: one slot, three CPUs a run, every job run on
    'node-a', which it says in the driver's output."""

    slots, cpus_per_run = 1, 3

    def __init__(self, context: modiff.LaunchContext) -> None:
        self.context = context
        self.jobs: list[modiff.RunJob] = []
        self.closed = False

    def submit(self, job: modiff.RunJob) -> FakeRun:
        self.jobs.append(job)
        assert self.context.log is not None, "the driver gives a launcher its log"
        self.context.log(f"{job.name}: placed on node-a by the fake launcher")
        return FakeRun(modiff.start_job(job))

    def close(self) -> None:
        self.closed = True


def test_a_launcher_registered_through_the_hook_runs_each_run_and_says_where(
    tmp_path: Path, use_registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[FakeLauncher] = []

    class Plugin:
        @modiff.hookimpl
        def register_launchers(self, register: modiff.Register) -> None:
            def build(settings: Any, context: modiff.LaunchContext) -> FakeLauncher:
                """One slot on 'node-a'."""
                built.append(FakeLauncher(context))
                return built[-1]

            register("fake", build)

    use_registry(plugin_registry(ToyPlugin(), Plugin()))
    real_job = ablation_module._job

    def stand_in(ablation: Any, cell: Any, threads: int, log_path: Path) -> modiff.RunJob:
        job = real_job(ablation, cell, threads, log_path)
        return modiff.RunJob(job.name, (sys.executable, "-c", FAKE_JOB, str(log_path.parent.parent / cell.name),
                                        *job.argv[1:]), job.env, job.cpus, job.gpus, job.log_path, job.cwd)

    monkeypatch.setattr(ablation_module, "_job", stand_in)
    said: list[str] = []
    records = run_ablation(read_ablation(grid(tmp_path, '[launcher]\nname = "fake"\n')), progress=False,
                           log=said.append)
    assert "denoiser.hidden=8: placed on node-a by the fake launcher" in said, said
    (launcher,) = built
    assert launcher.closed and [job.name for job in launcher.jobs] == ["denoiser.hidden=4", "denoiser.hidden=8"]
    assert all(job.cpus == 3 and job.gpus == 0 for job in launcher.jobs)
    for record in records:
        assert record["status"] == "done" and record["launch"]["node"] == "node-a"
        started = json.loads((tmp_path / "runs" / "abl" / record["name"] / "started.json").read_text())
        assert started["omp"] == "3" and started["argv"][-2:] == ["--threads", "3"], started
        assert ["--run", record["name"]] == started["argv"][started["argv"].index("--run"):][:2]
