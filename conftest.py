"""How the whole repository's tests (tests/, plugins/*/tests, contrib/*/tests)
share the cores under pytest-xdist (``-n auto --dist loadgroup``, the README's
test command).

Each test file runs whole in one worker, so a module's Ray cluster, Slurm
daemons or trained reference run is made once, except the few long files
named in :data:`SPLIT`, whose tests are dealt out one by one: with every file
whole, the last of them kept one core busy for minutes while the other idled.
A split file's module fixtures are made once per worker that runs its tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

#: Long files whose tests may run on different workers (their module
#: fixtures are cheap next to the files' own time).
SPLIT = {"tests/experiments/test_ablation.py", "tests/faults/test_faults.py"}


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist every worker is one process per core, so each (and every process it
    starts) gets one OpenMP thread unless told otherwise: two threads per worker on two
    cores made the workers wait on each other's threads (the whole default run: 916 s,
    and 875 s with one thread and this change's smaller tests, on the same machine)."""
    if config.pluginmanager.hasplugin("xdist") and getattr(config.option, "numprocesses", None):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):  # one process: nothing to share out
        return
    for item in items:
        try:
            where = item.path.resolve().relative_to(ROOT).as_posix()
        except ValueError:  # a test outside the repository (a plugin skeleton's, in a temporary folder)
            continue
        if where not in SPLIT:
            item.add_marker(pytest.mark.xdist_group(where))
