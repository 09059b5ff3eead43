"""Fixtures of the modiff-sd tests: the tiny diffusers pipeline (see ``_sd_tiny``) and its import."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Test helpers live next to the tests (never in the plugin); the name is unique in the project.
sys.path.insert(0, str(Path(__file__).parent))

from _sd_tiny import make_pipeline, quiet_libraries  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """``(folder, pipeline)``: the tiny pipeline and where save_pretrained wrote it."""
    quiet_libraries()
    pipe = make_pipeline()
    folder = tmp_path_factory.mktemp("tiny-sd") / "pipeline"
    pipe.save_pretrained(str(folder))
    yield folder, pipe


@pytest.fixture(scope="session")
def imported(tiny_sd: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline imported once into a run (read-only for the tests)."""
    from modiff_sd.importer import import_sd

    run = tmp_path_factory.mktemp("runs") / "tiny"
    import_sd(tiny_sd[0], run)
    return run


