"""Subcommands of ``modiff``, one module each with an ``add(sub)`` function."""
