"""The demo's recipe (core/modiff/configs/demo.toml), trained for a few steps:
two processes (gloo) give the same model as one at the same global batch, and
the same seed gives the same model twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modiff.commands.demo import demo_settings_path
from modiff.runs import RunDir

#: The recipe at a budget of seconds: every stage runs, nothing is evaluated.
TINY = [
    "data.size=64",
    "train.encoder.steps=3",
    "train.encoder.batch_size=8",
    "train.text_embedder.steps=2",
    "train.text_embedder.batch_size=8",
    "train.steps=4",
    "train.batch_size=8",
    "train.warmup_steps=1",
    "train.checkpoint_every=2",
    "train.eval_every=0",
    "sample.steps=2",
    'run.device="cpu"',
]


def train(tmp_path: Path, name: str, *extra: str) -> RunDir:
    sets = [*TINY, f'run.name="{name}"', f'run.runs_dir="{tmp_path}"']
    cmd = [sys.executable, "-m", "modiff", "train", str(demo_settings_path()), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    result = subprocess.run([*cmd, *extra], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return RunDir(tmp_path / name)


def trained_weights(run: RunDir) -> dict[str, dict[str, torch.Tensor]]:
    roles = [r for r in ("denoiser", "conditioner", "text_embedder") if run.weights(r).is_file()]
    return {role: load_file(str(run.weights(role))) for role in roles}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_train_the_demo_recipe_like_one(tmp_path: Path) -> None:
    one = trained_weights(train(tmp_path, "one"))
    two = trained_weights(train(tmp_path, "two", "--nproc", "2"))
    assert one.keys() == two.keys() and "denoiser" in one
    for role in one:
        assert one[role].keys() == two[role].keys()
        for k in one[role]:
            torch.testing.assert_close(two[role][k], one[role][k], rtol=1e-4, atol=1e-5, msg=f"{role} {k}")


def test_same_seed_same_demo_model(tmp_path: Path) -> None:
    a = trained_weights(train(tmp_path, "a"))
    b = trained_weights(train(tmp_path, "b"))
    for role in a:
        for k in a[role]:
            assert torch.equal(a[role][k], b[role][k]), (role, k)
