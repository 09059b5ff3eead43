"""Errors a user can act on.

Everything here derives from :class:`ModiffError`. The CLI prints such an
error as one paragraph and exits with status 2, without a traceback, because
it describes a mistake in the user's input (a settings file, a path, a plugin
choice), not a bug. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class ModiffError(Exception):
    """A problem the user can fix; its message says what and how."""

    exit_code = 2


class SettingsError(ModiffError):
    """One or more problems in settings files, environment or ``--set``.

    All problems found are reported together, so a user fixes a file in one
    pass instead of one error per run.
    """

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems in the settings:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(message)


class PluginError(ModiffError):
    """A plugin could not be found, loaded, or built; names the plugin and its distribution."""


class RunError(ModiffError):
    """A run directory is missing, incomplete or holds foreign files."""


class WeightsError(ModiffError):
    """A weights file is corrupt, truncated, foreign or does not fit the model."""


class TruncationWarning(UserWarning):
    """A prompt had more tokens than a text embedder's ``max_tokens``; the rest were dropped.

    One category for every text embedder, so that a user silences (or turns
    into an error) truncation from any plugin with one filter::

        warnings.filterwarnings("ignore", category=modiff.TruncationWarning)
    """
