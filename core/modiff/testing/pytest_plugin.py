"""pytest fixtures that come with modiff (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..plugins import Registry, reset_registry, set_registry
from . import plugin_registry


@pytest.fixture
def modiff_registry() -> Callable[..., Registry]:
    """Factory: ``modiff_registry(plugin, ...)`` -> a fresh :class:`modiff.Registry`
    with exactly those plugin objects registered and no entry points loaded."""

    def make(*plugins: Any, entry_points: bool = False) -> Registry:
        return plugin_registry(*plugins, entry_points=entry_points)

    return make


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run the test on one torch thread, then restore the setting.

    Plugin tests use tiny networks: a second OpenMP thread gains nothing, and
    on a loaded 2-core machine the synchronisation between threads made single
    forward passes 10-100x slower than on one thread. A plugin's conftest
    makes it apply to all its tests with an autouse fixture that requests it.
    """
    import torch  # here, so that loading this pytest plugin does not import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    """Forget the process-wide registry before and after the test (for tests
    that install or fake entry points)."""
    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def use_registry() -> Iterator[Callable[[Registry], Registry]]:
    """``use_registry(reg)`` makes ``reg`` the process-wide registry for the
    test (so the CLI and ``Pipeline.load`` see plugins that are not installed)."""

    def use(reg: Registry) -> Registry:
        set_registry(reg)
        return reg

    yield use
    reset_registry()
