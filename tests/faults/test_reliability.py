"""Never lose a run: SIGKILL at random points, distributed training equals one process."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modiff.testing.toys import TOY_SETTINGS
from modiff.toml_io import dumps

pytestmark = pytest.mark.slow  # subprocesses and torchrun


def write_settings(tmp_path: Path, name: str, **train) -> Path:
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"].update(name=name, runs_dir=str(tmp_path / "runs"), deterministic=True)
    data["train"].update(train)
    path = tmp_path / f"{name}.toml"
    path.write_text(dumps(data))
    return path


def modiff(*args: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "modiff", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def check_no_torn_file(run: Path) -> None:
    """Every file under its real name is complete: parseable JSON/TOML, loadable safetensors."""
    import tomllib

    for path in run.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".toml":
            tomllib.loads(path.read_text())


def final_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    from modiff.runs import RunDir

    return {role: load_file(str(RunDir(run).weights(role))) for role in ("denoiser", "conditioner")}


def test_sigkill_at_random_points_then_resume_gives_identical_weights(tmp_path: Path, toy_subprocess_env) -> None:
    env = toy_subprocess_env
    steps = dict(steps=200, checkpoint_every=9, log_every=1)  # 22 checkpoints, three kills among them
    reference = modiff("train", str(write_settings(tmp_path, "ref", **steps)), "--quiet", env=env)
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err

    settings = write_settings(tmp_path, "killed", **steps)
    run = tmp_path / "runs" / "killed"
    rng = random.Random(0)
    kills = 0
    first = True
    while True:
        args = ["train", str(settings), "--quiet"] + ([] if first else ["--resume"])
        proc = modiff(*args, env=env)
        first = False
        target = rng.randint(5, 170)
        killed = False
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            lines = (run / "metrics.jsonl").read_text().count("\n") if (run / "metrics.jsonl").exists() else 0
            if kills < 3 and lines >= target:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed = True
                kills += 1
                break
            time.sleep(0.005)
        if not killed:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            break
        check_no_torn_file(run)
    assert kills >= 1, "the run finished before any kill; make it longer"
    ref, got = final_weights(tmp_path / "runs" / "ref"), final_weights(run)
    for role in ref:
        for k in ref[role]:
            assert torch.equal(ref[role][k], got[role][k]), (role, k)
    check_no_torn_file(run)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_gloo_training_equals_one_process(tmp_path: Path, toy_subprocess_env) -> None:
    env = toy_subprocess_env
    single = modiff("train", str(write_settings(tmp_path, "one", steps=5, batch_size=8)), "--quiet", env=env)
    _, err = single.communicate(timeout=300)
    assert single.returncode == 0, err
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "modiff", "train", str(write_settings(tmp_path, "two", steps=5, batch_size=8)), "--quiet",
    ]
    result = subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = final_weights(tmp_path / "runs" / "one"), final_weights(tmp_path / "runs" / "two")
    for role in one:
        for k in one[role]:
            torch.testing.assert_close(one[role][k], two[role][k], rtol=1e-4, atol=1e-5)
    lines = (tmp_path / "runs" / "two" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == [1, 2, 3, 4, 5], "only rank 0 writes metrics"


def test_a_reader_beside_a_training_run_loads_and_generates_every_time(
    tmp_path: Path, toy_subprocess_env, use_registry, monkeypatch
) -> None:
    """`Pipeline.load` + generate in a loop while a run trains and commits a
    checkpoint every step (each commit removes the checkpoint before the
    previous one): every load reads one checkpoint whole. The reader is made
    slow (as a large model's load is), so that commits land in its loads."""
    from modiff import checkpoint as checkpoints
    from modiff.pipeline import Pipeline
    from modiff.testing import plugin_registry
    from modiff.testing.toys import ToyPlugin

    read = checkpoints.read_tensors

    def slow_read(*args, **kwargs):
        time.sleep(0.1)
        return read(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "read_tensors", slow_read)

    settings = write_settings(tmp_path, "busy", steps=5000, checkpoint_every=1)
    trainer = modiff("train", str(settings), "--quiet", env=toy_subprocess_env)
    use_registry(plugin_registry(ToyPlugin()))  # (the trainer's fake-toys is on sys.path too)
    run = tmp_path / "runs" / "busy"
    try:
        deadline = time.time() + 120
        while not (run / "LATEST").is_file():
            assert trainer.poll() is None and time.time() < deadline, "the run never checkpointed"
            time.sleep(0.05)
        loads, failures, checkpoints = 0, [], set()
        while loads < 25:
            assert trainer.poll() is None, "the run finished before the reader was done; make it longer"
            try:
                pipeline = Pipeline.load(run)
                pipeline.generate(["a red square"], seed=0, steps=2)
            except Exception as exc:  # noqa: BLE001 (every failure is reported)
                failures.append(f"{type(exc).__name__}: {exc}")
            loads += 1
            checkpoints.add((run / "LATEST").read_text().strip())
    finally:
        trainer.kill()
        trainer.communicate()
    assert not failures, f"{len(failures)} of {loads} loads failed, e.g. {failures[:2]}"
    assert len(checkpoints) >= 5, "the trainer committed too few checkpoints for the test to mean anything"
