"""Subcommands of ``modiff``, one module each with an ``add(sub)`` function.

``modiff`` imports every command module to build its parser, so a command
imports what it runs (the pipeline, the trainer, torch) inside its handler:
``modiff --help`` and ``modiff plugins`` stay fast. Those are the imports
inside functions here, and the only reason for them.
"""

import argparse
import re

from ..errors import ModiffError

#: ``--device``'s help, the same words in every command that loads a run.
DEVICE_HELP = "where to run: cpu, cuda, cuda:N or auto (default: the run's [run] device)"


class CommandLineParser(argparse.ArgumentParser):
    """The parser of ``modiff`` and (argparse gives a subparser its parent's
    class) of every command: a mistake on the command line (an unknown option,
    ``--n abc``, a missing argument) is a :class:`ModiffError`, so it is shown
    as every other user mistake is, one ``modiff: error:`` line with exit code
    2, instead of argparse's usage block and a line of its own format."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from ..settings import did_you_mean  # settings imports pydantic: only when there is a mistake

        choice = re.match(r"argument .*: invalid choice: '(.*)' \(choose from (.*)\)$", message)
        if choice:  # argparse names the allowed ones; the nearest is what was meant, most often
            message += did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        command = self.prog.removeprefix("modiff").strip()
        raise ModiffError(f"{command + ': ' if command else ''}{message} (see `{self.prog} --help`)")
