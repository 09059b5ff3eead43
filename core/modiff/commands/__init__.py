"""Subcommands of ``modiff``, one module each with an ``add(sub)`` function.

``modiff`` imports every command module to build its parser, so a command
imports what it runs (the pipeline, the trainer, torch) inside its handler:
``modiff --help`` and ``modiff plugins`` stay fast. Those are the imports
inside functions here, and the only reason for them.
"""

#: ``--device``'s help, the same words in every command that loads a run.
DEVICE_HELP = "where to run: cpu, cuda, cuda:N or auto (default: the run's [run] device)"
