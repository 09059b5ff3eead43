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

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

#: Long files whose tests may run on different workers (their module
#: fixtures are cheap next to the files' own time).
SPLIT = {"tests/experiments/test_ablation.py", "tests/faults/test_faults.py"}


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
