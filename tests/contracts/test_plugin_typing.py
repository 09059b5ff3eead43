"""Every installed plugin is written against the typed plugin API: its
registration hooks take a ``modiff.Register`` and its factories a
``modiff.BuildContext`` (a tracker's, the ``modiff.TrackedRun`` it
follows), so a type checker sees a plugin's mistakes the way it
sees the core's (``Any`` would hide them)."""

from __future__ import annotations

import inspect
import typing

import modiff
from modiff.plugins import LAUNCHER, ROLE_HOOKS, TRACKER, registry


def test_every_role_hook_of_every_installed_plugin_takes_a_typed_register() -> None:
    reg = registry()
    assert reg.manager is not None
    untyped = []
    for hook in ROLE_HOOKS.values():
        for impl in getattr(reg.manager.hook, hook).get_hookimpls():
            hint = typing.get_type_hints(impl.function).get("register")
            if hint is not modiff.Register:
                untyped.append(f"{impl.plugin_name}.{hook}: register is {hint}")
    assert not untyped, untyped


def test_every_factory_of_every_installed_plugin_takes_a_typed_context() -> None:
    untyped = []
    checked = 0
    for role, components in registry().components.items():
        for registrations in components.values():
            for r in registrations:
                parameters = list(inspect.signature(r.factory).parameters)
                hint = typing.get_type_hints(r.factory).get(parameters[1]) if len(parameters) > 1 else None
                checked += 1
                expected = {TRACKER: modiff.TrackedRun, LAUNCHER: modiff.LaunchContext}.get(role, modiff.BuildContext)
                if hint is not expected:
                    untyped.append(f"{r.distribution} {role} {r.name!r}: context is {hint}")
    assert checked and not untyped, untyped
