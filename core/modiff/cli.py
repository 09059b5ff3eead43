"""The ``modiff`` command line.

Each subcommand lives in ``modiff.commands.<name>`` with an ``add(sub)``
function; plugins add theirs through the ``register_commands(cli)`` hook.
A :class:`ModiffError` (a user mistake) is printed as one paragraph and exits
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .commands import CommandLineParser
from .errors import ModiffError
from .plugins import registry

COMMAND_MODULES = ("plugins", "settings", "train", "generate", "evaluate", "demo", "ablate", "segment")


def parser() -> argparse.ArgumentParser:
    top = CommandLineParser(
        prog="modiff",
        description="Latent diffusion from swappable plugins: train, sample, compare.",
    )
    top.add_argument("--version", action="version", version=f"modiff {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"modiff.commands.{name}").add(sub)
    _plugin_commands(sub)
    return top


def _plugin_commands(sub: argparse._SubParsersAction) -> None:
    pm = registry().manager
    if pm is None:
        return
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=sub)
        except (Exception, SystemExit) as exc:  # a plugin's command must not break (or end) the CLI
            print(f"modiff: plugin {impl.plugin_name!r} failed to add its commands: {exc!r}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        top = parser()
        args, rest = top.parse_known_args(argv)
        if rest and not getattr(args, "takes_task_options", False):
            command = f"modiff {args.command}" if getattr(args, "command", None) else "modiff"
            CommandLineParser(prog=command).error(f"unrecognized arguments: {' '.join(rest)}")
        args.task_arguments = rest  # a command whose options depend on the run's task parses them itself
        if not getattr(args, "func", None):
            parser().print_help()
            return 2
        return int(args.func(args) or 0)
    except ModiffError as exc:
        print(f"modiff: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("modiff: interrupted", file=sys.stderr)
        return 130
