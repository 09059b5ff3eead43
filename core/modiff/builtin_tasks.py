"""The core's tasks as a plugin: they register through ``register_tasks``, as a plugin's tasks do.

The registry loads this module by name (:data:`modiff.plugins.BUILTIN_PLUGINS`),
as it loads an entry point, so the registry itself knows no task.
"""

from __future__ import annotations

from .hookspecs import RegisterTask, hookimpl


@hookimpl
def register_tasks(register: RegisterTask) -> None:
    """text-to-image, mask-to-image, inpainting and segmentation."""
    # Tasks import torch: they load when a task is first looked up, not with the registry (`modiff plugins`).
    from .tasks import BUILTIN_TASKS

    for task in BUILTIN_TASKS:
        register(task)
