"""Never lose what is not ours; one guard for every write; every command-line mistake one clear line.

On toys, in-process (`modiff.cli.main`), so each case takes about a second:
`--overwrite` and names that could reach outside the runs folder, a real full
disk (a small tmpfs) that ends a run with one clear error and a resume that
then ends bit-identical, and the smaller command-line holes of issue 42.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from modiff.cli import main
from modiff.runs import RunDir
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


def one_clear_line(err: str, *words: str) -> None:
    """A user error: one ``modiff: error:`` line holding ``words``, no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("modiff: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, err)


def toy_settings(tmp_path: Path, runs: Path, name: str = "toy") -> Path:
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"].update(name=name, runs_dir=str(runs), deterministic=True)
    path = tmp_path / f"{name}.toml"
    path.write_text(dumps(data))
    return path


@pytest.fixture
def toys(use_registry) -> None:
    use_registry(plugin_registry(ToyPlugin()))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. --overwrite and names ------------------------------------------------------------------------------------


def test_overwrite_deletes_nothing_in_a_folder_that_is_not_a_modiff_run(toys, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    proj = runs / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "settings.toml").write_text("[tool]\nanother = true\n")  # another tool's settings
    (proj / "thesis.tex").write_text("\\begin{document}")
    (proj / "src" / "main.py").write_text("print('mine')\n")
    before = snapshot(proj)
    settings = toy_settings(tmp_path, runs)
    for args in (
        ["train", str(settings), "--set", 'run.name="proj"', "--overwrite"],
        ["train", str(settings), "--set", 'run.name="proj"', "--resume"],
        ["train", str(proj), "--overwrite"],
    ):
        assert main(args) == 2, args
        one_clear_line(capsys.readouterr().err, "proj", "not a modiff run")
        assert snapshot(proj) == before and sorted(p.name for p in proj.iterdir()) == ["settings.toml", "src",
                                                                                        "thesis.tex"]
    # a run of modiff's own is still overwritten, and keeps its marker
    assert main(["train", str(settings), "--quiet"]) == 0
    assert main(["train", str(settings), "--quiet", "--overwrite"]) == 0
    assert RunDir(runs / "toy").is_run()


@pytest.mark.parametrize(
    ("files", "folders", "is_run"),
    [
        (["settings.toml", ".modiff-run"], [], True),  # written by modiff train, before any checkpoint
        (["settings.toml", "LATEST"], ["checkpoints"], True),  # imported, or from a stage cache
        (["settings.toml", "state.json"], ["components"], True),  # checkpoints before they were folders
        (["settings.toml", ".lock", "state.json", "LATEST"], ["src"], False),  # names alone are not a layout
        ([".modiff-run", "LATEST"], ["checkpoints"], False),  # no settings
    ],
)
def test_a_run_is_known_by_its_own_markers(tmp_path: Path, files, folders, is_run) -> None:
    for name in files:
        (tmp_path / name).write_text("x")
    for name in folders:
        (tmp_path / name).mkdir()
    assert RunDir(tmp_path).is_run() is is_run


def test_a_run_name_that_is_a_file_or_blank_is_a_clear_error(toys, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "notes").write_text("mine")
    settings = toy_settings(tmp_path, runs)
    assert main(["train", str(settings), "--set", 'run.name="notes"', "--overwrite"]) == 2
    one_clear_line(capsys.readouterr().err, "notes", "is a file")
    assert (runs / "notes").read_text() == "mine"
    for blank in (" ", "  ", "a ", " a", "\t"):
        assert main(["train", str(settings), "--set", f"run.name={json.dumps(blank)}"]) == 2, repr(blank)
        one_clear_line(capsys.readouterr().err, "[run] name")
    assert sorted(p.name for p in runs.iterdir()) == ["notes"]


def test_overwrite_never_empties_the_folder_it_is_run_from(toys, tmp_path: Path, capsys, monkeypatch) -> None:
    settings = toy_settings(tmp_path, tmp_path / "runs")
    assert main(["train", str(settings), "--quiet"]) == 0
    run = tmp_path / "runs" / "toy"
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    monkeypatch.chdir(run)
    assert main(["train", ".", "--overwrite", "--quiet"]) == 2
    one_clear_line(capsys.readouterr().err, "--overwrite", "the folder you are in", "nothing was deleted")
    assert snapshot(run) == before


def test_an_ablation_name_cannot_leave_the_runs_folder(toys, tmp_path: Path, capsys) -> None:
    settings = toy_settings(tmp_path, tmp_path / "inner" / "runs")
    for bad in ("../escape", "/tmp/escape", "..", " ", "a/b"):
        ablation = tmp_path / "grid.toml"
        ablation.write_text(f'base = "{settings.name}"\nname = {json.dumps(bad)}\n')
        assert main(["ablate", str(ablation), "--quiet"]) == 2, bad
        one_clear_line(capsys.readouterr().err, "name", "one folder name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml", "toy.toml"], "nothing was written anywhere"


# -- 2. a full disk ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 4 MiB tmpfs (skipped where mounting is not permitted), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not permitted'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A file that leaves ``leave`` bytes free on ``disk``."""
    stat = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def final_components(run: Path) -> dict[str, dict]:
    folder = RunDir(run).checkpoint().path / "components"
    return {p.name: load_file(str(p)) for p in sorted(folder.glob("*.safetensors"))}


# Free space left when training starts, and the write it runs out in (on this tmpfs, with these toys): the lock of
# a disk already full; a metrics line mid-stage (an OSError); a checkpoint's trainer state (safetensors'
# SafetensorError, which carries no errno).
FREE = {"lock": 0, "metrics": 12 * 1024, "safetensors": 44 * 1024}


@pytest.mark.parametrize("leave", FREE.values(), ids=FREE.keys())
def test_a_full_disk_is_one_clear_error_and_resume_after_freeing_space_ends_bit_identical(
    toys, tmp_path: Path, small_disk: Path, capsys, leave: int
) -> None:
    reference = toy_settings(tmp_path, tmp_path / "runs", name="ref")
    assert main(["train", str(reference), "--quiet"]) == 0
    settings = toy_settings(tmp_path, small_disk / "runs", name="ref")
    filler = fill(small_disk, leave)
    capsys.readouterr()
    assert main(["train", str(settings), "--quiet"]) == 2
    one_clear_line(capsys.readouterr().err, "cannot write", str(small_disk / "runs" / "ref"), "the disk is full")
    run = small_disk / "runs" / "ref"
    filler.unlink()
    again = ["train", str(run), "--resume", "--quiet"] if RunDir(run).is_run() else ["train", str(settings), "--quiet"]
    assert main(again) == 0
    ref, got = final_components(tmp_path / "runs" / "ref"), final_components(run)
    assert ref.keys() == got.keys() and ref
    for name in ref:
        assert ref[name].keys() == got[name].keys()
        assert all(ref[name][k].equal(got[name][k]) for k in ref[name]), name


# -- 3. every command-line mistake one clear line ---------------------------------------------------------------


@pytest.mark.parametrize("seed", ["18446744073709551616", "-1"])
def test_train_refuses_a_seed_generate_would_refuse_and_leaves_no_stub(toys, tmp_path: Path, capsys, seed) -> None:
    settings = toy_settings(tmp_path, tmp_path / "runs")
    assert main(["train", str(settings), "--quiet", "--set", f"run.seed={seed}"]) == 2
    one_clear_line(capsys.readouterr().err, "[run] seed", seed)
    assert not (tmp_path / "runs").exists(), "no stub run is left"


@pytest.fixture
def trained(toys, tmp_path: Path) -> Path:
    assert main(["train", str(toy_settings(tmp_path, tmp_path / "runs")), "--quiet"]) == 0
    return tmp_path / "runs" / "toy"


#: Generation options no run can honour (each formerly accepted or a traceback), and words of their one-line error.
GENERATE_MISTAKES = {
    "negative guidance": (["--guidance", "-5"], "guidance = -5"),
    "out /dev/null": (["--out", "/dev/null"], "--out /dev/null"),
    "out inside a file": (["--out", "{tmp}/file.png/x"], "file.png, which is not a folder"),
    "out .png that is a folder": (["--out", "{tmp}/folder.png"], "folder.png is a folder"),
    "device meta": (["--device", "meta"], "--device = 'meta'"),
}


@pytest.mark.parametrize("case", GENERATE_MISTAKES.values(), ids=GENERATE_MISTAKES.keys())
def test_generate_values_no_run_can_honour_are_clear_errors(trained: Path, tmp_path: Path, capsys, case) -> None:
    args, words = case
    (tmp_path / "file.png").write_bytes(b"not a folder")
    (tmp_path / "folder.png").mkdir()
    capsys.readouterr()
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["generate", str(trained), "a red square", "--steps", "2", *args]) == 2, args
    one_clear_line(capsys.readouterr().err, words)
    assert (tmp_path / "file.png").read_bytes() == b"not a folder"


#: Train options and settings that name a folder where there can be none, and words of their one-line error.
TRAIN_FOLDERS = {
    "runs_dir /dev/null": (["--set", 'run.runs_dir="/dev/null"'], "[run] runs_dir /dev/null is not a folder"),
    "runs_dir inside a file": (["--set", 'run.runs_dir="{tmp}/file/runs"'], "which is not a folder"),
    "stage cache /dev/null": (["--stage-cache", "/dev/null"], "--stage-cache /dev/null is not a folder"),
    "stage cache inside a file": (["--stage-cache", "{tmp}/file/cache"], "which is not a folder"),
}


@pytest.mark.parametrize("case", TRAIN_FOLDERS.values(), ids=TRAIN_FOLDERS.keys())
def test_train_folders_that_cannot_be_folders_are_clear_errors(toys, tmp_path: Path, capsys, case) -> None:
    args, words = case
    (tmp_path / "file").write_text("mine")
    settings = toy_settings(tmp_path, tmp_path / "runs")
    assert main(["train", str(settings), "--quiet", *[a.format(tmp=tmp_path) for a in args]]) == 2
    one_clear_line(capsys.readouterr().err, words)
    assert (tmp_path / "file").read_text() == "mine"


def test_nproc_that_cannot_split_the_batch_is_one_error_before_torchrun(
    toys, tmp_path: Path, capsys, monkeypatch
) -> None:
    import modiff.commands.train as train_command

    def no_torchrun(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(train_command.subprocess, "call", no_torchrun)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    settings = toy_settings(tmp_path, tmp_path / "runs")  # batch 4
    assert main(["train", str(settings), "--nproc", "3", "--quiet"]) == 2
    one_clear_line(capsys.readouterr().err, "batch_size = 4", "3 processes")
    assert not (tmp_path / "runs").exists()


def test_an_environment_variable_that_names_no_setting_is_reported(
    toys, tmp_path: Path, capsys, monkeypatch
) -> None:
    settings = toy_settings(tmp_path, tmp_path / "runs")
    monkeypatch.setenv("MODIFF_TRAIN_STEPS", "3")
    assert main(["train", str(settings), "--quiet"]) == 2
    one_clear_line(capsys.readouterr().err, "MODIFF_TRAIN_STEPS", "MODIFF_TRAIN__STEPS")
    monkeypatch.delenv("MODIFF_TRAIN_STEPS")
    monkeypatch.setenv("MODIFF_TRAIN__STEPS", "1")  # two underscores: the setting, as before
    assert main(["settings", "show", str(settings)]) == 0
    assert "steps = 1" in capsys.readouterr().out


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("where", ["file", "--set", "environment", "ablation"])
def test_a_value_nested_too_deeply_is_a_clear_error(toys, tmp_path: Path, capsys, monkeypatch, where) -> None:
    settings = toy_settings(tmp_path, tmp_path / "runs")
    args, words = ["train", str(settings)], "too deeply"
    if where == "file":
        nested = tmp_path / "deep.toml"
        nested.write_text(f"[sample]\nprompts = {DEEP}\n")
        args.append(str(nested))
    elif where == "ablation":
        nested = tmp_path / "deep.toml"
        nested.write_text(f'base = "{settings.name}"\n[set]\n"sample.prompts" = {DEEP}\n')
        args = ["ablate", str(nested), "--dry-run"]
    elif where == "--set":
        args += ["--set", f"sample.prompts={DEEP}"]
    else:
        monkeypatch.setenv("MODIFF_SAMPLE__PROMPTS", DEEP)
    assert main(args) == 2
    one_clear_line(capsys.readouterr().err, words, {"file": "deep.toml", "--set": "--set sample.prompts",
                                                    "environment": "MODIFF_", "ablation": "deep.toml"}[where])


def test_a_plugin_that_calls_sys_exit_at_import_is_listed_as_broken(fake_distribution, capsys) -> None:
    fake_distribution("fake-exit", "fake_exit", "import sys\nsys.exit(3)\n")
    assert main(["plugins"]) == 0
    shown = capsys.readouterr()
    assert "fake_exit" in shown.out + shown.err and "sys.exit(3)" in shown.out + shown.err


def test_a_plugin_hook_that_calls_sys_exit_marks_it_broken_and_the_others_keep_working() -> None:
    import sys

    import modiff
    from modiff.plugins import registry_from

    class Exiting:
        __name__ = "exiting"

        @modiff.hookimpl
        def register_schedulers(self, register):  # type: ignore[no-untyped-def]
            sys.exit(4)

    reg = registry_from(Exiting(), ToyPlugin())
    [broken] = [b for b in reg.broken if b.plugin == "exiting"]
    assert "SystemExit" in broken.error and "4" in broken.error
    assert reg.lookup("scheduler", "toy") is not None


def test_a_plugin_command_that_calls_sys_exit_leaves_the_cli_working(use_registry, capsys) -> None:
    import sys

    import modiff
    from modiff.plugins import registry_from

    class Exiting:
        __name__ = "exiting"

        @modiff.hookimpl
        def register_commands(self, cli):  # type: ignore[no-untyped-def]
            sys.exit(5)

    use_registry(registry_from(Exiting(), ToyPlugin()))
    assert main(["settings", "schema"]) == 0
    assert "'exiting' failed to add its commands: SystemExit(5)" in capsys.readouterr().err


def test_a_run_whose_creation_was_killed_before_its_settings_landed_starts_again(
    toys, tmp_path: Path, capsys
) -> None:
    """A job killed between the marker (written first) and the settings' atomic rename
    leaves the marker and a temporary file: that folder is modiff's own, and the rerun
    (an ablation's retry) starts the run there instead of refusing it as foreign."""
    runs = tmp_path / "runs"
    half = runs / "toy"
    half.mkdir(parents=True)
    (half / ".modiff-run").write_text("a modiff run\n")
    (half / ".settings.toml.tn1f6wg1.tmp").write_text("[run]\n")  # the settings' atomic write, cut short
    assert main(["train", str(toy_settings(tmp_path, runs)), "--quiet"]) == 0, capsys.readouterr().err
    assert RunDir(half).is_run() and RunDir(half).latest() is not None
    assert not list(half.glob(".settings.toml.*.tmp"))
    # without the marker the same leftovers are someone else's: refused, untouched
    other = runs / "other"
    other.mkdir()
    (other / ".settings.toml.abc.tmp").write_text("[run]\n")
    assert main(["train", str(toy_settings(tmp_path, runs, "other")), "--quiet"]) == 2
    one_clear_line(capsys.readouterr().err, "other", "not a modiff run")
    assert sorted(p.name for p in other.iterdir()) == [".settings.toml.abc.tmp"]
