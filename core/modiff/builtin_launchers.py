"""The core's launcher as a plugin: ``local`` registers through ``register_launchers``, as ``ray`` does.

The registry loads this module by name (:data:`modiff.plugins.BUILTIN_PLUGINS`),
as it loads an entry point, so the registry itself knows no launcher.
"""

from __future__ import annotations

from .hookspecs import Register, hookimpl
from .local_launcher import build_local


@hookimpl
def register_launchers(register: Register) -> None:
    """``local``: this machine's cores."""
    register("local", build_local)
