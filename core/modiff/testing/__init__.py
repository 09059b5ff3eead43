"""What a plugin's tests need: isolated registries, builders, strategies, contracts.

A plugin's test module subclasses the contract class of its role and names
its component::

    from modiff.testing.contracts import SchedulerContract

    class TestMySampler(SchedulerContract):
        plugin = "my-sampler"
        settings = {"steps_hint": 10}

and pytest runs every property the built-in components are held to. The
``modiff_registry`` fixture (installed as a pytest plugin with modiff) gives a
fresh registry with chosen plugin objects and no entry points loaded.
``modiff.testing.mutants`` holds the toys with one plausible mistake each,
which the contracts must catch (``python -m modiff.testing.mutants``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..plugins import Registry, registry, registry_from
from ..settings import ResolvedComponent, RunSettings


def plugin_registry(*plugins: Any, entry_points: bool = False) -> Registry:
    """A fresh registry holding ``plugins`` (modules or objects with hook
    implementations); installed entry points only if ``entry_points``."""
    return registry_from(*plugins, entry_points=entry_points)


def build_one(
    role: str,
    name: str,
    settings: Mapping[str, Any] | None = None,
    *,
    context: Any = None,
    registry_: Registry | None = None,
) -> Any:
    """Build one component by its registered name, as the assembly would.

    ``context`` is a :class:`modiff.BuildContext` (a CPU one with default run
    settings when omitted); settings are validated by the plugin's model.
    """
    # assembly imports torch: the pytest plugin imports this module, and torch loads only when a test builds
    from ..assembly import BuildContext, build_component

    reg = (registry_ or registry()).lookup(role, name)
    params = reg.validate(dict(settings or {}))
    ctx = context if context is not None else BuildContext(run=RunSettings())
    return build_component(ResolvedComponent(role, reg, params), ctx)


__all__ = ["build_one", "plugin_registry"]
