"""The slurm launcher without a cluster: its options as [launcher] keys, and its job's requeue
path (the cluster tests are tests/distributed/test_slurm_launcher.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import modiff
from modiff.errors import SettingsError
from modiff.launching import launcher_settings

pytest.importorskip("submitit")


def test_slurm_is_a_launcher_and_a_mistyped_option_is_one_line_naming_the_options() -> None:
    registration, settings = launcher_settings({"name": "slurm", "partition": "gpu", "time": 30}, None, "grid.toml")
    assert registration.distribution == "modiff-launcher-slurm"
    assert (settings.partition, settings.time, settings.retries) == ("gpu", 30, 2)
    with pytest.raises(SettingsError) as caught:
        launcher_settings({"name": "slurm", "partiton": "gpu"}, None, "grid.toml")
    (problem,) = caught.value.problems
    assert "grid.toml" in problem and "partiton" in problem and "partition" in problem.split("its options")[1]


def test_the_launcher_keeps_submitits_files_in_the_grids_folder_and_caps_its_slots(tmp_path: Path) -> None:
    from modiff_launcher_slurm import SlurmSettings, build_slurm

    launcher = build_slurm(SlurmSettings(), modiff.LaunchContext(jobs=None, runs_dir=tmp_path / "grid"))
    assert isinstance(launcher, modiff.Launcher)
    assert launcher.folder == tmp_path / "grid" / ".slurm" and launcher.slots == 64 and launcher.cpus_per_run == 1
    capped = build_slurm(SlurmSettings(cpus_per_run=2), modiff.LaunchContext(jobs=3, runs_dir=tmp_path))
    assert (capped.slots, capped.cpus_per_run) == (3, 2)


REQUEUE = textwrap.dedent(
    """
    import os, signal, sys, threading
    from pathlib import Path
    import modiff
    from modiff_launcher_slurm.job import RunCommand

    job = modiff.RunJob(name="r", argv=("sleep", "60"), env={}, cpus=1, gpus=0,
                        log_path=Path(sys.argv[1]), cwd=Path.cwd())
    command = RunCommand(job)

    class Requeued(Exception):
        pass

    def on_usr2(signum, frame):  # what submitit's handler does: checkpoint, then requeue and exit
        again = command.checkpoint()
        assert isinstance(again.function, RunCommand) and again.function is not command
        raise Requeued

    signal.signal(signal.SIGUSR2, on_usr2)

    def send():  # to the process, delivered to the main thread (this one blocks it), as Slurm's is
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        os.kill(os.getpid(), signal.SIGUSR2)

    threading.Timer(1.0, send).start()
    try:
        command()
    except Requeued:
        print("requeued")
    """
)


def test_a_requeue_signal_during_the_commands_wait_ends_the_command_and_requeues(tmp_path: Path) -> None:
    """submitit calls checkpoint() from its signal handler, which interrupts RunCommand's wait for
    the command: ending the command there must not wait for Popen's lock (it hung for good)."""
    done = subprocess.run([sys.executable, "-c", REQUEUE, str(tmp_path / "run.log")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "requeued", done.stderr[-2000:]
