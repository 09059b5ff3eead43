"""Issue 37: every command of ``modiff`` (the core's and the installed
plugins') says what it does in ``--help``, and every argument has help text."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from modiff.cli import parser


def commands(p: argparse.ArgumentParser, path: str = "modiff") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``p`` and every subcommand under it, each with its command line."""
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                assert listed.get(name), f"{path} {name} has no help line in {path}'s list of commands"
                yield from commands(child, f"{path} {name}")


def undocumented(p: argparse.ArgumentParser) -> list[str]:
    """The arguments of ``p`` with no help text (argparse.SUPPRESS: hidden on purpose, allowed)."""
    return [
        "/".join(a.option_strings) or a.dest
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()
    ]


def test_every_command_has_a_description_and_every_argument_help() -> None:
    problems = []
    for path, p in commands(parser()):
        if not (p.description or "").strip():
            problems.append(f"{path}: no description")
        problems.extend(f"{path}: {arg} has no help text" for arg in undocumented(p))
    assert not problems, "\n".join(problems)


def test_the_walk_sees_every_core_command() -> None:
    seen = {path for path, _ in commands(parser())}
    for name in ("train", "generate", "evaluate", "demo", "ablate", "segment", "settings schema", "plugins new"):
        assert f"modiff {name}" in seen
