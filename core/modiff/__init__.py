"""modiff: latent diffusion taken apart into swappable, plugin-provided pieces.

The public API a plugin may import. Importing ``modiff`` is cheap (no torch);
the torch-backed parts (``build``, ``BuildContext``, ``Pipeline``, ``randn``)
load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ModiffError, PluginError, RunError, SettingsError, WeightsError
from .hookspecs import hookimpl
from .plugins import ComponentSettings, NoSettings, Registration, Registry, registry, registry_from
from .protocols import (
    Batch,
    Conditioner,
    Conditioning,
    ConditioningSpec,
    Dataset,
    Denoiser,
    DenoiserSpec,
    Encoder,
    Evaluator,
    Example,
    Fittable,
    Scheduler,
    TextEmbedder,
    TextEmbedding,
    Trainable,
)
from .settings import ResolvedSettings, load_settings, resolve
from .settings import load as load_settings_files

__version__ = "0.1.0"

_LAZY = {
    "BuildContext": ("modiff.assembly", "BuildContext"),
    "Components": ("modiff.assembly", "Components"),
    "build": ("modiff.assembly", "build"),
    "randn": ("modiff.noise", "randn"),
    "generators": ("modiff.noise", "generators"),
    "TrainingStep": ("modiff.training.step", "TrainingStep"),
}

if TYPE_CHECKING:
    from .assembly import BuildContext, Components, build
    from .noise import generators, randn
    from .training.step import TrainingStep


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modiff' has no attribute {name!r}")


__all__ = [
    "Batch",
    "BuildContext",
    "Components",
    "ComponentSettings",
    "Conditioner",
    "Conditioning",
    "ConditioningSpec",
    "Dataset",
    "Denoiser",
    "DenoiserSpec",
    "Encoder",
    "Evaluator",
    "Example",
    "Fittable",
    "ModiffError",
    "NoSettings",
    "PluginError",
    "Registration",
    "Registry",
    "ResolvedSettings",
    "RunError",
    "Scheduler",
    "SettingsError",
    "TextEmbedder",
    "TextEmbedding",
    "Trainable",
    "TrainingStep",
    "WeightsError",
    "build",
    "generators",
    "hookimpl",
    "load_settings",
    "load_settings_files",
    "randn",
    "registry",
    "registry_from",
    "resolve",
]
