"""modiff-distill at tiny sizes: the plugin's imports, its settings errors, a
distillation whose loss falls and whose 4-step images come closer to the
teacher's 10-step images than the teacher's own 4-step images, and the
distillation stage under a kill and on two processes."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PLUGIN = Path(__file__).resolve().parents[1]
REPO = PLUGIN.parents[1]
TINY = REPO / "tests" / "tiny-run.toml"
KILL = REPO / "tests" / "faults" / "_kill_after.py"

#: The public API a plugin may import (modiff/__init__.py's docstring).
PUBLIC = {"modiff", "modiff.protocols", "modiff.tasks", "modiff.sampler_swap", "modiff.testing"}

TEACHER_EXTRA = """
[text_embedder]
plugin = "transformer"
width = 16
depth = 1
heads = 2
"""

PROMPTS = ["a red circle", "a blue square at the top", "a green triangle", "a yellow circle on the left"] * 2


def test_the_plugin_imports_only_modiffs_public_api() -> None:
    used = set()
    for path in (PLUGIN / "modiff_distill").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                used.add((path.name, node.module))
            elif isinstance(node, ast.Import):
                used.update((path.name, alias.name) for alias in node.names)
    modiff_imports = {(f, m) for f, m in used if m == "modiff" or m.startswith("modiff.")}
    assert modiff_imports, "the scan found no import of modiff: it scans the wrong files"
    private = sorted((f, m) for f, m in modiff_imports if m not in PUBLIC)
    assert not private, f"imports of modiff's private modules: {private}"


def env() -> dict[str, str]:
    out = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out.pop("WORLD_SIZE", None)
    return out


def modiff(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modiff", *args], env=env(), cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def distill_settings(tmp: Path, teacher: Path, name: str, **train: object) -> Path:
    """The student's settings, layered over the teacher's own settings file."""
    table = {"steps": 40, "lr": 3e-4, "ema_decay": 0.0, "warmup_steps": 1, "checkpoint_every": 10, "log_every": 1,
             "batch_size": 8, **train}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
    path = tmp / f"{name}.toml"
    path.write_text(f"""
[run]
name = "{name}"
task = "consistency-distillation"
[encoder]
plugin = "teacher"
teacher = "{teacher.as_posix()}"
[text_embedder]
plugin = "teacher"
teacher = "{teacher.as_posix()}"
[conditioner]
plugin = "consistency"
teacher = "{teacher.as_posix()}"
guidance = 1.5
[denoiser]
plugin = "consistency-student"
teacher = "{teacher.as_posix()}"
[train]
{lines}
[sample]
scheduler = "lcm"
steps = 4
guidance = 1.0
""")
    return path


def test_a_missing_teacher_is_one_clear_line_naming_the_key(tmp_path: Path) -> None:
    student = distill_settings(tmp_path, tmp_path / "no-such-run", "student")
    base = tmp_path / "base.toml"
    base.write_text(TINY.read_text().format(runs=(tmp_path / "runs").as_posix(), steps=1, stage_steps=1,
                                            checkpoint_every=1) + TEACHER_EXTRA)
    done = modiff("train", str(base), str(student), "--quiet")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "[encoder] teacher" in done.stderr and "no-such-run" in done.stderr and "no such run folder" in done.stderr
    assert "Traceback" not in done.stderr


def train_teacher(tmp: Path, steps: int, stage_steps: int) -> Path:
    """A tiny text-to-image run (v-prediction on a zero-SNR schedule, as the demo's)."""
    text = TINY.read_text().format(runs=(tmp / "runs").as_posix(), steps=steps, stage_steps=stage_steps,
                                   checkpoint_every=1000)
    text = text.replace("[run]\n", '[run]\nname = "teacher"\n', 1)
    text = text.replace('plugin = "ddim"\n', 'plugin = "ddim"\nprediction_type = "v_prediction"\n'
                        "rescale_betas_zero_snr = true\n", 1)
    text = text.replace("[train]\n", "[train]\nlr = 0.002\n", 1) + TEACHER_EXTRA
    path = tmp / "teacher.toml"
    path.write_text(text)
    done = modiff("train", str(path), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "runs" / "teacher"


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher of a few steps, for what its quality does not matter to (a resume, a zero
    loss, settings): trained once per module and process, its students beside it."""
    return train_teacher(tmp_path_factory.mktemp("small"), steps=4, stage_steps=4)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained long enough that its 4-step images differ from its 10-step ones."""
    return train_teacher(tmp_path_factory.mktemp("teacher"), steps=150, stage_steps=20)


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("stage") == "denoiser" and "loss" in r]


@pytest.mark.slow
@pytest.mark.heavy
def test_a_tiny_distillation_falls_and_comes_closer_to_the_teachers_many_steps(teacher: Path, tmp_path: Path) -> None:
    """The student's loss falls, and its images come closer to the teacher's 10-step
    images than the teacher's own images drawn the same way (the lcm sampler, the
    same prompts, seeds and noise; the teacher guided at the student's w).

    At this size that holds in one step; at 4 steps it did not (see the report of
    issue 40): each lcm step after the first re-noises with fresh noise, so a
    4-step image is another sample rather than the ODE's end from the same noise.
    At 4 steps the multistep student does it (the next test)."""
    from modiff import Pipeline

    done = modiff("train", str(teacher / "settings.toml"), str(distill_settings(tmp_path, teacher, "student",
                                                                              steps=200, lr=1e-3)), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    run = teacher.parent / "student"
    loss = losses(run)
    assert len(loss) == 200 and sum(loss[-50:]) < sum(loss[:50]), loss
    seeds = list(range(len(PROMPTS)))
    t, s = Pipeline.load(teacher), Pipeline.load(run)
    with torch.no_grad():
        reference = t.generate_tensor(PROMPTS, seeds=seeds, steps=10, guidance=1.5)
        teacher_1 = t.with_sampler("lcm").generate_tensor(PROMPTS, seeds=seeds, steps=1, guidance=1.5)
        student_1 = s.generate_tensor(PROMPTS, seeds=seeds, steps=1, guidance=1.0)  # w = 1.5, folded in
    teacher_error = (teacher_1 - reference).pow(2).mean().item()
    student_error = (student_1 - reference).pow(2).mean().item()
    assert student_error < 0.8 * teacher_error, (student_error, teacher_error)


@pytest.mark.slow
@pytest.mark.heavy
def test_a_tiny_multistep_distillation_draws_4_steps_closer_to_the_teachers_many_steps(teacher: Path,
                                                                                       tmp_path: Path) -> None:
    """At 4 steps, with multistep consistency: a student of 4 segments over 8 points on the
    teacher's path learns the teacher's 8 guided DDIM steps in 4 jumps, so its 4-step images
    (ddim, trailing, the same prompts, seeds and noise; deterministic, unlike the lcm sampler's)
    are closer to the teacher's 10-step images than the teacher's own 4 guided DDIM steps are."""
    from modiff import Pipeline

    student = distill_settings(tmp_path, teacher, "multistep", steps=200, lr=1e-3)
    student.write_text(student.read_text().replace('scheduler = "lcm"\nsteps = 4', 'scheduler = "ddim"\nsteps = 4')
                       .replace("guidance = 1.5\n", "guidance = 1.5\nsegments = 4\noriginal_inference_steps = 8\n"
                                "teacher_path = true\n", 1))
    done = modiff("train", str(teacher / "settings.toml"), str(student), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    run = teacher.parent / "multistep"
    loss = losses(run)
    assert len(loss) == 200 and sum(loss[-50:]) < sum(loss[:50]), loss
    seeds = list(range(len(PROMPTS)))
    t = Pipeline.load(teacher).with_sampler("ddim", timestep_spacing="trailing")
    s = Pipeline.load(run).with_sampler("ddim", timestep_spacing="trailing")
    with torch.no_grad():
        reference = t.generate_tensor(PROMPTS, seeds=seeds, steps=10, guidance=1.5)
        teacher_4 = t.generate_tensor(PROMPTS, seeds=seeds, steps=4, guidance=1.5)
        student_4 = s.generate_tensor(PROMPTS, seeds=seeds, steps=4, guidance=1.0)  # w = 1.5, folded in
    teacher_error = (teacher_4 - reference).pow(2).mean().item()
    student_error = (student_4 - reference).pow(2).mean().item()
    assert student_error < teacher_error, (student_error, teacher_error)


@pytest.mark.slow
@pytest.mark.heavy
def test_a_teacher_that_does_not_fit_is_a_clear_error(teacher: Path, tmp_path: Path) -> None:
    student = distill_settings(tmp_path, teacher, "wide")
    done = modiff("train", str(teacher / "settings.toml"), str(student), "--set", "data.image_size=48", "--quiet")
    assert done.returncode == 2 and "does not fit" in done.stderr and "48" in done.stderr, done.stderr[-2000:]
    other = modiff("train", str(teacher / "settings.toml"), str(student), "--set", "run.name=words",
                   "--set", 'text_embedder={plugin="word2vec"}', "--quiet")
    assert other.returncode == 2, other.stderr[-2000:]
    assert "[conditioner] teacher" in other.stderr and "text embedder" in other.stderr, other.stderr[-2000:]
    assert "Traceback" not in done.stderr + other.stderr


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    from modiff import RunDir

    return {role: load_file(str(RunDir(run).weights(role))) for role in ("conditioner", "denoiser")}


@pytest.fixture(scope="module")
def uninterrupted(teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    done = modiff("train", str(teacher / "settings.toml"), str(distill_settings(tmp, teacher, "whole")), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    return teacher.parent / "whole"


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.parametrize("count", [2, 3])
def test_a_kill_in_the_distillation_then_resume_ends_bit_identical(
    teacher: Path, uninterrupted: Path, tmp_path: Path, count: int
) -> None:
    name = f"killed{count}"
    args = ["train", str(teacher / "settings.toml"), str(distill_settings(tmp_path, teacher, name)), "--quiet"]
    first = subprocess.run([sys.executable, str(KILL), "LATEST", str(count), "--", *args], env=env(),
                           capture_output=True, text=True, timeout=900)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    run = teacher.parent / name
    resumed = modiff("train", str(run), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref, got = weights(uninterrupted), weights(run)
    for role, tensors in ref.items():
        different = [k for k in tensors if not torch.equal(tensors[k], got[role][k])]
        assert not different, f"{role}: {len(different)} tensors differ from the uninterrupted run: {different[:3]}"


def test_a_killed_distillation_of_a_few_steps_resumes_bit_identical(small_teacher: Path, tmp_path: Path) -> None:
    """The kill test above at a size CI runs (the heavy ones are left out of it): a
    teacher of a few steps (its quality does not matter to a resume), a student
    killed after its second checkpoint and resumed, against one run uninterrupted.
    The resumed student reloads the assets of its teacher's text transformer, which
    rebuilds its word table: were the table trainable again, the optimizer would not
    match its saved state ('parameter group that doesn't match'; the core keeps it
    frozen, restore_assets)."""
    small = small_teacher
    args = {"steps": 6, "checkpoint_every": 2}
    whole = modiff("train", str(small / "settings.toml"), str(distill_settings(tmp_path, small, "whole", **args)),
                   "--quiet")
    assert whole.returncode == 0, whole.stderr[-3000:]
    student = distill_settings(tmp_path, small, "killed", **args)
    killed = ["train", str(small / "settings.toml"), str(student), "--quiet"]
    first = subprocess.run([sys.executable, str(KILL), "LATEST", "2", "--", *killed], env=env(),
                           capture_output=True, text=True, timeout=900)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    resumed = modiff("train", str(small.parent / "killed"), "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref, got = weights(small.parent / "whole"), weights(small.parent / "killed")
    for role, tensors in ref.items():
        different = [k for k in tensors if not torch.equal(tensors[k], got[role][k])]
        assert not different, f"{role}: {len(different)} tensors differ from the uninterrupted run: {different[:3]}"


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_distill_as_one(teacher: Path, uninterrupted: Path, tmp_path: Path) -> None:
    args = ["train", str(teacher / "settings.toml"), str(distill_settings(tmp_path, teacher, "two")), "--nproc", "2"]
    done = modiff(*args, "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = weights(uninterrupted), weights(teacher.parent / "two")
    for role, tensors in one.items():
        for key, value in tensors.items():
            if key.endswith("k_proj.bias"):  # Adam turns float noise in a zero gradient into steps (test_faults.py)
                continue
            torch.testing.assert_close(two[role][key], value, rtol=1e-3, atol=1e-5,
                                       msg=lambda m, role=role, key=key: f"{role}.{key}: {m}")


def test_a_multistep_student_that_is_its_teacher_has_nothing_to_learn_at_w_1(small_teacher: Path,
                                                                           tmp_path: Path) -> None:
    """``[conditioner] segments = original_inference_steps``: every segment is one
    teacher step, so the target is the teacher's own DDIM step, to the clean sample at
    the bottom as ddim's last step (not to t = 0, which still holds noise). At w = 1
    the student as it starts (the teacher, its guidance embedding zero) makes exactly
    those steps: its first loss is 0. With w drawn from [1, 3] it is not, and falls."""
    small = small_teacher

    def distill(name: str, guidance_range: str, steps: int, extra: str = "") -> list[float]:
        student = distill_settings(tmp_path, small, name, steps=steps, lr=1e-3)
        student.write_text(student.read_text().replace('scheduler = "lcm"\nsteps = 4', 'scheduler = "ddim"\nsteps = 2')
                           .replace("guidance = 1.5\n", "guidance = 1.5\nsegments = 2\noriginal_inference_steps = 2\n"
                                    f"guidance_range = {guidance_range}\n{extra}", 1))
        done = modiff("train", str(small / "settings.toml"), str(student), "--quiet")
        assert done.returncode == 0, done.stderr[-3000:]
        return losses(small.parent / name)

    assert distill("same", "[1.0, 1.0]", 1)[0] < 1e-6
    # on the teacher's own path (inputs from its DDIM step, not the data noised) as well
    assert distill("same-path", "[1.0, 1.0]", 1, "teacher_path = true\n")[0] < 1e-6
    guided = distill("guided", "[1.0, 3.0]", 16)
    assert guided[0] > 1e-4 and sum(guided[-4:]) < sum(guided[:4]), guided


def test_a_student_with_skipped_blocks_learns_and_draws_without_them(small_teacher: Path, tmp_path: Path) -> None:
    """``[denoiser] skip_blocks``: the student's checkpoint holds none of the skipped
    block's tensors, it draws, and a block the teacher does not have is exit 2 naming it."""
    from modiff import Pipeline

    def settings(name: str, blocks: str) -> Path:
        path = distill_settings(tmp_path, small_teacher, name, steps=2)
        path.write_text(path.read_text().replace('plugin = "consistency-student"\n',
                                                 f'plugin = "consistency-student"\nskip_blocks = {blocks}\n', 1))
        return path

    done = modiff("train", str(small_teacher / "settings.toml"), str(settings("skipped", '["mid_block"]')), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    from safetensors.torch import load_file

    from modiff import RunDir

    teacher_keys, student_keys = (set(load_file(str(RunDir(run).weights("denoiser"))))
                                  for run in (small_teacher, small_teacher.parent / "skipped"))
    assert any(k.startswith("mid_block.") for k in teacher_keys)
    assert not any("mid_block" in k for k in student_keys) and any("up_blocks" in k for k in student_keys)
    with torch.no_grad():
        images = Pipeline.load(small_teacher.parent / "skipped").generate_tensor(["a red circle"], seeds=[0], steps=2)
    assert images.shape[0] == 1 and torch.isfinite(images).all()

    bad = modiff("train", str(small_teacher / "settings.toml"), str(settings("bad", '["middle"]')), "--quiet")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert "[denoiser] skip_blocks: no block named 'middle'" in bad.stderr and "mid_block" in bad.stderr, bad.stderr
