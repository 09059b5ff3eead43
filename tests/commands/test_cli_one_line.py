"""Issue 37: every command-line mistake is one clear line and exit code 2,
argparse's own mistakes (unknown options, bad values, missing arguments,
unknown commands) included, with the nearest command for a misspelt one."""

from __future__ import annotations

import pytest

from modiff.cli import main

#: Command lines argparse refuses, and words their one line must hold.
MISTAKES = {
    "misspelt command": (["trian"], ["invalid choice: 'trian'", "(did you mean 'train'?)", "modiff --help"]),
    "misspelt action": (["settings", "shwo"], ["(did you mean 'show'?)", "modiff settings --help"]),
    "not a number": (["generate", "runs/x", "--n", "abc"], ["generate: argument --n", "'abc'"]),
    "missing argument": (["settings", "show"], ["settings show:", "SETTINGS", "modiff settings show --help"]),
    "unknown option": (["train", "a.toml", "--bogus"], ["train: unrecognized arguments: --bogus", "train --help"]),
    "bad option value": (["ablate", "a.toml", "--jobs", "0"], ["--jobs", "at least 1"]),
    "missing action": (["settings"], ["ACTION"]),
}


@pytest.mark.parametrize("case", MISTAKES.values(), ids=MISTAKES.keys())
def test_a_command_line_mistake_is_one_line_and_exit_code_2(capsys, case) -> None:
    args, words = case
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "usage:" not in captured.err, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modiff: error: "), captured.err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_a_command_far_from_every_command_gets_no_guess(capsys) -> None:
    assert main(["zzzzzz"]) == 2
    line = capsys.readouterr().err
    assert "did you mean" not in line and "choose from" in line


def test_help_and_version_still_exit_0(capsys) -> None:
    for args in (["--help"], ["--version"], ["train", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 0


@pytest.fixture
def toy_run(use_registry, tmp_path):  # type: ignore[no-untyped-def]
    import json

    from modiff.testing import plugin_registry
    from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
    from modiff.toml_io import dumps

    use_registry(plugin_registry(ToyPlugin()))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"].update(name="toy", runs_dir=str(tmp_path / "runs"), deterministic=True)
    (tmp_path / "toy.toml").write_text(dumps(data))
    assert main(["train", str(tmp_path / "toy.toml"), "--quiet"]) == 0
    return tmp_path / "runs" / "toy"


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize("out", ["/proc/modiff-no-folder/grid.png", "/proc/modiff-no-folder"])
def test_generate_out_where_no_folder_can_be_made_is_one_line(toy_run, capsys, out) -> None:
    """/proc refuses a new folder with ENOENT (FileNotFoundError), which was a traceback."""
    capsys.readouterr()
    assert main(["generate", str(toy_run), "a red square", "--steps", "2", "--out", out]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("modiff: error:")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert "cannot make the folder /proc/modiff-no-folder" in lines[0]
