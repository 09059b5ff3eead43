"""Faults tried for real on the real plugins at tiny sizes: kills at chosen
moments of every stage and of every checkpoint's commit, Ctrl-C, two writers,
damaged and missing files, full and read-only disks.

Each kill test compares the final weights of every component, bit for bit,
with an uninterrupted run of the same settings.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modiff.cli import main
from modiff.runs import RunDir

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ROLES = ("encoder", "text_embedder", "conditioner", "denoiser")

# Every first-party plugin of a text-to-image run (tests/tiny-run.toml) with a small CLIP:
# 6 autoencoder steps, 6 CLIP steps, 8 denoiser steps, a checkpoint every 3.
CLIP = """
[text_embedder]
plugin = "clip"
width = 16
heads = 2
layers = 1
vision_width = 16
vision_heads = 2
vision_layers = 1
projection_dim = 8
vocab_size = 600
"""


def env() -> dict[str, str]:
    out = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out.pop("WORLD_SIZE", None)
    return out


def settings(tmp: Path, name: str, *, steps: int = 8) -> Path:
    """The tiny settings, with ``steps`` denoiser steps."""
    template = (HERE.parent / "tiny-run.toml").read_text()
    text = template.format(runs=(tmp / "runs").as_posix(), steps=steps, stage_steps=6, checkpoint_every=3) + CLIP
    text = text.replace("[run]\n", f'[run]\nname = "{name}"\n', 1)
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


def modiff(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modiff", *args], env=env(), cwd=cwd, capture_output=True, text=True, timeout=600
    )


def killed_after(pattern: str, count: int, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(HERE / "_kill_after.py"), pattern, str(count), "--", *args]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)


def lines_of(run: Path) -> int:
    """Metrics lines written so far (one per step here)."""
    metrics = run / "metrics.jsonl"
    return metrics.read_text().count("\n") if metrics.exists() else 0


def final_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {role: load_file(str(RunDir(run).weights(role))) for role in ROLES}


def assert_same(reference: Path, run: Path) -> None:
    ref, got = final_weights(reference), final_weights(run)
    for role in ROLES:
        assert ref[role].keys() == got[role].keys(), role
        different = [k for k in ref[role] if not torch.equal(ref[role][k], got[role][k])]
        assert not different, (
            f"{role}: {len(different)} tensors differ from the uninterrupted run, e.g. {different[:3]}"
        )
    # CLIP's tokenizer: trained alike in another process, and left as it was by every resume
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        ref_file, got_file = (RunDir(r).assets("text_embedder") / name for r in (reference, run))
        assert ref_file.read_bytes() == got_file.read_bytes(), f"{name} differs from the uninterrupted run's"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    done = modiff("train", str(settings(tmp, "ref")), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "runs" / "ref"


# The commits of a run of these settings, in order (a LATEST rename each):
# encoder step 3, encoder done, CLIP step 3, CLIP done, denoiser steps 3 and 6, denoiser done.
KILLS = [
    ("trainer.json", 1),       # the first checkpoint staged, not committed: nothing to resume from
    ("LATEST", 1),             # the encoder mid-stage (the issue: the rest of its stage was skipped)
    ("00000[0-9]", 2),         # the encoder's finished checkpoint renamed, LATEST not yet moved
    ("state.json", 3),         # CLIP mid-stage, staged only: CLIP restarts from its initial weights
    ("text_embedder.safetensors", 2),  # CLIP's finished checkpoint half-written (its assets are in)
    ("conditioner.safetensors", 1),    # the denoiser's first checkpoint half-written
    ("LATEST", 6),             # the denoiser at step 6: text and latent caches rebuilt on resume
    ("LATEST", 7),             # everything done but the samples: resume has nothing to train
]


@pytest.mark.parametrize(("pattern", "count"), KILLS, ids=[f"{p}#{n}" for p, n in KILLS])
def test_a_kill_at_a_chosen_moment_then_resume_ends_bit_identical(
    reference: Path, tmp_path: Path, pattern: str, count: int
) -> None:
    path = settings(tmp_path, "killed")
    first = killed_after(pattern, count, "train", str(path), "--quiet")
    assert first.returncode == -signal.SIGKILL, f"the kill did not happen: {first.stderr[-2000:]}"
    run = tmp_path / "runs" / "killed"
    assert (run / "settings.toml").is_file()
    resumed = modiff("train", str(run), "--resume", "--quiet", cwd=tmp_path.parent)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same(reference, run)
    leftovers = [p.name for p in (run / "checkpoints").iterdir()]
    assert len(leftovers) <= 2 and not [n for n in leftovers if n.startswith(".")], leftovers


def test_kills_at_random_moments_then_resume_ends_bit_identical(reference: Path, tmp_path: Path) -> None:
    path = settings(tmp_path, "random")
    run = tmp_path / "runs" / "random"
    rng = random.Random(0)
    kills = 0
    args = ["train", str(path), "--quiet"]
    while True:
        proc = subprocess.Popen([sys.executable, "-m", "modiff", *args], env=env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        args = ["train", str(run), "--resume", "--quiet"]
        target = rng.randint(2, 20)
        deadline = time.time() + 300
        killed = False
        while proc.poll() is None and time.time() < deadline:
            lines = (
                run.joinpath("metrics.jsonl").read_text().count("\n") if run.joinpath("metrics.jsonl").exists() else 0
            )
            if kills < 3 and lines >= target:
                time.sleep(rng.random() * 0.2)
                proc.kill()
                proc.wait()
                killed, kills = True, kills + 1
                break
            time.sleep(0.005)
        if not killed:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            break
    assert kills >= 1
    assert_same(reference, run)


def test_ctrl_c_checkpoints_a_whole_step_and_resume_ends_bit_identical(reference: Path, tmp_path: Path) -> None:
    """The issue: a Ctrl-C right after the optimiser step saved the checkpoint under
    the previous step, so the resumed run applied that update twice."""
    path = settings(tmp_path, "interrupted")
    run = tmp_path / "runs" / "interrupted"
    rng = random.Random(1)
    args = ["train", str(path), "--quiet"]
    interrupts = 0
    while True:
        proc = subprocess.Popen([sys.executable, "-m", "modiff", *args], env=env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        args = ["train", str(run), "--resume", "--quiet"]
        target = lines_of(run) + rng.randint(1, 6)  # while it trains (a Ctrl-C at start-up is Python's own)
        while proc.poll() is None:
            if interrupts < 3 and lines_of(run) >= target:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.002)
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 130:
            interrupts += 1
            assert "checkpoint saved" in err and "--resume" in err and "Traceback" not in err, err[-2000:]
            continue
        assert proc.returncode == 0, err[-3000:]
        break
    assert interrupts >= 1
    assert_same(reference, run)


def test_missing_component_weights_are_refused_by_generate_and_resume(reference: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    for role in ("encoder", "text_embedder"):
        broken = tmp_path / f"without-{role}"
        shutil.copytree(run, broken)
        RunDir(broken).weights(role).unlink()
        assert main(["generate", str(broken), "a red circle", "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert f"{role}.safetensors is missing" in err and "Traceback" not in err
    # mid-training: the resumed stage needs the finished ones' weights
    mid = tmp_path / "mid"
    first = killed_after("LATEST", 5, "train", str(settings(tmp_path, "mid")), "--quiet")
    assert first.returncode == -signal.SIGKILL
    mid = tmp_path / "runs" / "mid"
    RunDir(mid).weights("encoder").unlink()
    resumed = modiff("train", str(mid), "--resume", "--quiet")
    assert resumed.returncode == 2 and "encoder.safetensors is missing" in resumed.stderr, resumed.stderr[-2000:]


def test_one_writer_per_run_and_a_killed_writers_lock_is_not_stale(tmp_path: Path) -> None:
    path = settings(tmp_path, "busy", steps=400)
    run = tmp_path / "runs" / "busy"
    writer = subprocess.Popen([sys.executable, "-m", "modiff", "train", str(path), "--quiet"], env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (run / "LATEST").exists() and time.time() < deadline:
            time.sleep(0.05)
        for args in (["train", str(path), "--overwrite", "--quiet"], ["train", str(run), "--resume", "--quiet"]):
            other = modiff(*args)
            assert other.returncode == 2, other.stderr[-2000:]
            assert "is being written by process" in other.stderr and str(writer.pid) in other.stderr
        assert RunDir(run).latest() is not None, "the refused --overwrite deleted nothing"
    finally:
        writer.kill()
        writer.wait()
    # The killed writer's lock is not stale: a resume takes the run over (seen holding its lock;
    # training the remaining ~400 steps would prove nothing more, and cost a minute of CI).
    resumed = subprocess.Popen([sys.executable, "-m", "modiff", "train", str(run), "--resume", "--quiet"],
                               env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while str(resumed.pid) not in (RunDir(run).writer() or ""):
            assert resumed.poll() is None, resumed.communicate()[1][-2000:]
            assert time.time() < deadline, "the resume never took the run over"
            time.sleep(0.05)
    finally:
        resumed.kill()
        resumed.wait()
    again = modiff("train", str(path), "--overwrite", "--quiet", "--set", "train.steps=4")
    assert again.returncode == 0, again.stderr[-2000:]


def test_run_names_are_one_folder_and_overwrite_removes_only_that_run(tmp_path: Path, capsys) -> None:
    path = settings(tmp_path, "one")
    assert modiff("train", str(path), "--quiet", "--set", "train.steps=1").returncode == 0
    sibling = tmp_path / "runs" / "keep-me"
    sibling.mkdir()
    (sibling / "precious.txt").write_text("x")
    for bad in ["", ".", "..", "/tmp", "a/b", ".hidden"]:
        assert main(["train", str(path), "--set", f"run.name={json.dumps(bad)}", "--overwrite"]) == 2
        assert "[run] name" in capsys.readouterr().err
    assert (sibling / "precious.txt").is_file()
    assert modiff("train", str(path), "--quiet", "--overwrite", "--set", "train.steps=1").returncode == 0
    assert (sibling / "precious.txt").is_file()
    foreign = tmp_path / "runs" / "not-a-run"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["train", str(path), "--set", 'run.name="not-a-run"', "--overwrite"]) == 2
    assert "is not a modiff run" in capsys.readouterr().err and (foreign / "notes.txt").is_file()


def test_resume_works_from_anywhere_and_a_copy_resumes_in_place(tmp_path: Path) -> None:
    path = settings(tmp_path, "here")
    first = killed_after("LATEST", 5, "train", str(path), "--quiet")
    assert first.returncode == -signal.SIGKILL
    run = tmp_path / "runs" / "here"
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(run, copy)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    resumed = modiff("train", str(copy / "settings.toml"), "--resume", "--quiet", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert RunDir(copy).read_state()["stages_done"] == ["encoder", "text_embedder", "denoiser"]
    assert RunDir(run).read_state()["stages_done"] == ["encoder", "text_embedder"], "the original was not touched"
    missing = modiff("train", str(tmp_path / "nope.toml"), "--resume")
    assert missing.returncode == 2
    absent = modiff("train", str(settings(tmp_path, "never-started")), "--resume")
    assert absent.returncode == 2 and "is not a run that was started" in absent.stderr


def test_a_stub_run_left_by_a_failed_start_resumes_from_the_beginning(reference: Path, tmp_path: Path) -> None:
    path = settings(tmp_path, "stub")
    first = killed_after("trainer.json", 1, "train", str(path), "--quiet")
    assert first.returncode == -signal.SIGKILL
    run = tmp_path / "runs" / "stub"
    assert RunDir(run).latest() is None
    again = modiff("train", str(path), "--quiet")
    assert again.returncode == 2 and "--resume" in again.stderr
    assert modiff("train", str(run), "--resume", "--quiet").returncode == 0
    assert_same(reference, run)


def test_damaged_checkpoint_files_are_clear_errors(reference: Path, tmp_path: Path) -> None:
    path = settings(tmp_path, "damaged")
    assert killed_after("LATEST", 5, "train", str(path), "--quiet").returncode == -signal.SIGKILL
    run = RunDir(tmp_path / "runs" / "damaged")
    (run.checkpoint().path / "trainer.json").write_text("{not json")
    resumed = modiff("train", str(run.path), "--resume", "--quiet")
    assert resumed.returncode == 2 and "trainer.json" in resumed.stderr and "Traceback" not in resumed.stderr
    (run.path / "LATEST").write_text("999999\n")
    resumed = modiff("train", str(run.path), "--resume", "--quiet")
    assert resumed.returncode == 2 and "names checkpoint '999999'" in resumed.stderr


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_full_or_read_only_disks_are_clear_errors(tmp_path: Path, monkeypatch, capsys, code: int) -> None:
    import modiff.files

    path = settings(tmp_path, "disk", steps=2)
    real = os.replace

    def refusing(src, dst, *a, **k):  # type: ignore[no-untyped-def]
        if str(dst).endswith(".safetensors"):
            raise OSError(code, os.strerror(code))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(modiff.files.os, "replace", refusing)
    assert main(["train", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and ("disk is full" in err or "read-only" in err)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_train_every_stage_as_one(reference: Path, tmp_path: Path) -> None:
    """The autoencoder (posterior noise drawn for the global batch), CLIP (negatives
    gathered from both processes) and the denoiser (cached latents and text) on two
    gloo processes against one process: equal up to the order of float sums.

    Adam turns the float noise in a gradient that is zero in exact arithmetic
    (the bias of attention keys: softmax ignores it) into steps of the learning
    rate's size, so those parameters are compared by what they compute."""
    done = modiff("train", str(settings(tmp_path, "two")), "--nproc", "2", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = final_weights(reference), final_weights(tmp_path / "runs" / "two")
    for role in ROLES:
        for key, value in one[role].items():
            if key.endswith("k_proj.bias"):
                continue
            torch.testing.assert_close(
                two[role][key], value, rtol=1e-3, atol=1e-5, msg=lambda m, role=role, key=key: f"{role}.{key}: {m}"
            )
    from modiff.pipeline import Pipeline

    prompts = ["a red circle at the top left", "a small blue square", ""]
    with torch.no_grad():
        a = Pipeline.load(reference).components.text_embedder.embed(prompts)
        b = Pipeline.load(tmp_path / "runs" / "two").components.text_embedder.embed(prompts)
    torch.testing.assert_close(b.tokens, a.tokens, rtol=1e-4, atol=1e-5)
    assert RunDir(tmp_path / "runs" / "two").read_state()["stages_done"] == ["encoder", "text_embedder", "denoiser"]
