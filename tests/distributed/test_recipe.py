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


#: The roles of the demo's recipe that have weights. Every one must have its file: a
#: comparison that skipped a missing one would pass with nothing compared.
TRAINED_ROLES = ("encoder", "text_embedder", "conditioner", "denoiser")


def trained_weights(run: RunDir) -> dict[str, dict[str, torch.Tensor]]:
    missing = [role for role in TRAINED_ROLES if not run.weights(role).is_file()]
    assert not missing, f"the run wrote no weights for {', '.join(missing)}"
    return {role: load_file(str(run.weights(role))) for role in TRAINED_ROLES}


def test_a_role_without_its_weights_file_fails_the_comparison(tmp_path: Path) -> None:
    """The comparison's own check: a run that wrote no file for one role is not "the same model"."""
    from safetensors.torch import save_file

    class Written:
        def weights(self, role: str) -> Path:
            return tmp_path / f"{role}.safetensors"

    run = Written()
    for role in TRAINED_ROLES[:-1]:
        save_file({"w": torch.zeros(1)}, str(run.weights(role)))
    with pytest.raises(AssertionError, match=f"no weights for {TRAINED_ROLES[-1]}"):
        trained_weights(run)  # type: ignore[arg-type]
    save_file({"w": torch.zeros(1)}, str(run.weights(TRAINED_ROLES[-1])))
    assert trained_weights(run).keys() == set(TRAINED_ROLES)  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_train_the_demo_recipe_like_one(tmp_path: Path) -> None:
    one = trained_weights(train(tmp_path, "one"))
    two = trained_weights(train(tmp_path, "two", "--nproc", "2"))
    for role in TRAINED_ROLES:
        assert one[role].keys() == two[role].keys()
        for k in one[role]:
            torch.testing.assert_close(two[role][k], one[role][k], rtol=1e-4, atol=1e-5, msg=f"{role} {k}")


def test_same_seed_same_demo_model(tmp_path: Path) -> None:
    a = trained_weights(train(tmp_path, "a"))
    b = trained_weights(train(tmp_path, "b"))
    for role in TRAINED_ROLES:
        assert a[role].keys() == b[role].keys(), role
        for k in a[role]:
            assert torch.equal(a[role][k], b[role][k]), (role, k)
