"""Ray launcher for modiff: ``[launcher] name = "ray"`` or ``modiff ablate FILE --launcher ray``.

Each run of a grid becomes a Ray task that declares its CPUs (and a GPU when
the run's device is CUDA); Ray places it on any node with room, and the task
runs the run's command (``modiff ablate FILE --run NAME``) there as a child
process. A task whose worker or node dies is run again by Ray, and the run
resumes from its last checkpoint. The driver (``modiff ablate``) stays the
only coordinator. Ray's usage statistics are switched off here, before ray
can be imported by anything of this plugin: nothing leaves the machines.
"""

from __future__ import annotations

import os

import modiff

from .settings import RaySettings

# Before ray's first import: ray reads it when it starts or joins a cluster.
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

__all__ = ["RaySettings", "build_ray", "register_launchers"]


def build_ray(settings: RaySettings, context: modiff.LaunchContext) -> modiff.Launcher:
    """A Ray cluster: each run a task on any node (a local instance, or address = an existing cluster)."""
    from .launcher import RayLauncher  # ray loads when a grid runs on it, not when plugins are listed

    return RayLauncher(settings, context)


@modiff.hookimpl
def register_launchers(register: modiff.Register) -> None:
    """``ray``."""
    register("ray", build_ray, RaySettings)
