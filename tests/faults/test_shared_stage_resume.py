"""A run started from another run's kept stages (``modiff.stage_cache``), killed
mid-denoiser and resumed, ends bit for bit where it ends uninterrupted.

It did not (found while testing the launchers, issue 36), and neither did a
run with the same text transformer that trained its own stages: resuming read
the transformer's vocabulary back after the stage's optimizer had taken its
parameters, ``load_assets`` replaces the word table, and the optimizer stepped
the replaced one, so the resumed run's word vectors never moved again. The toy
case, in a second: tests/unit/test_training.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # three jobs, one killed

ROOT = Path(__file__).resolve().parents[2]
TINY = (ROOT / "tests" / "tiny-run.toml").read_text().format(
    runs="{runs}", steps=10, stage_steps=2, checkpoint_every=2
) + '[text_embedder]\nplugin = "transformer"\nwidth = 16\nheads = 2\ndepth = 1\npretext = "layout"\npretext_grid = 4\n'


def job(path: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "modiff", "ablate", str(path), "--quiet", "--run", name,
                             "--threads", "1"], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def denoiser_steps(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return sum('"stage": "denoiser"' in line and '"loss"' in line
               for line in (metrics.read_text().splitlines() if metrics.is_file() else []))


def test_a_run_started_from_shared_stages_resumes_bit_for_bit(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text(TINY.format(runs=(tmp_path / "runs").as_posix()))
    path = tmp_path / "grid.toml"
    path.write_text('base = "base.toml"\nname = "grid"\nimages_per_prompt = 1\n[grid]\n"train.lr" = [1e-3, 2e-3]\n')
    out = tmp_path / "runs" / "grid"
    out.mkdir(parents=True)
    assert job(path, "train.lr=0.001").wait() == 0  # trains and keeps the stages
    assert job(path, "train.lr=0.002").wait() == 0  # starts from them, uninterrupted
    run = out / "train.lr=0.002"
    uninterrupted = json.loads((run / "cell.json").read_text())["losses"]
    shutil.rmtree(run)

    again = job(path, "train.lr=0.002")  # from the stages again, killed after a denoiser checkpoint
    deadline = time.monotonic() + 300
    while denoiser_steps(run) < 3:
        assert again.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
        time.sleep(0.02)
    again.send_signal(signal.SIGKILL)
    again.wait()
    assert job(path, "train.lr=0.002").wait() == 0  # resumes
    assert json.loads((run / "cell.json").read_text())["losses"] == uninterrupted
