"""Fixtures shared by the ablation tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modiff import ablation as ablation_module
from modiff.ablation import read_ablation, run_ablation

#: ``run(path) -> (trained, logged)``: see :func:`run_counting`.
CountingRun = Callable[[Path], tuple[list[str], list[str]]]


@pytest.fixture
def run_counting(monkeypatch: pytest.MonkeyPatch) -> CountingRun:
    """Runs an ablation file and says which cells it trained (in order) and the
    lines it printed: how a test tells a run trained from one reused or skipped."""

    def run(path: Path) -> tuple[list[str], list[str]]:
        trained: list[str] = []
        real = ablation_module.run_cell

        def counting(ab: Any, cell: Any, where: Path, **kwargs: Any) -> dict[str, Any]:
            trained.append(cell.name)
            return real(ab, cell, where, **kwargs)

        monkeypatch.setattr(ablation_module, "run_cell", counting)
        logged: list[str] = []
        run_ablation(read_ablation(path), progress=False, log=logged.append)
        return trained, logged

    return run
