"""modiff: latent diffusion taken apart into swappable, plugin-provided pieces.

The public API a plugin may import. Importing ``modiff`` is cheap (no torch);
the torch-backed parts (``build``, ``BuildContext``, ``Pipeline``, ``randn``,
the run-directory helpers) load on first use.

Run directories, for plugins that read or write whole runs (``modiff-sd``
imports and exports them): ``RunDir`` (the paths inside a run),
``CheckpointWriter`` (a checkpoint staged, then committed at one step),
``component_metadata`` (what a component's weights file records about the
plugin that made it), ``atomic_write_text`` and ``atomic_save_tensors``
(write beside, then rename).

Launchers, for plugins that run an ablation's runs elsewhere (``modiff-launcher-ray``):
``Launcher``, ``LaunchedRun``, ``RunJob`` and ``LaunchContext`` (the role,
:mod:`modiff.protocols`) and ``start_job`` (a job's command run as a child
process that ends with its parent, as the ``local`` launcher runs it).

Besides the names below, four modules are public: ``modiff.protocols`` (the
roles' protocols and value types), ``modiff.tasks`` (the ``Task`` base class a
``register_tasks`` plugin subclasses, and the task operations such as
``segment``), ``modiff.sampler_swap`` (what carries over when a run is sampled
with another sampler) and ``modiff.testing`` (contract tests, strategies and
toy components for a plugin's tests). Anything else in the package is the
core's own and may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ModiffError,
    PluginError,
    RunError,
    SettingsError,
    TruncationWarning,
    UnknownWordWarning,
    WeightsError,
)
from .hookspecs import Factory, Register, RegisterTask, hookimpl
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
    GeneratingPipeline,
    LaunchContext,
    LaunchedRun,
    Launcher,
    ParamValue,
    RunJob,
    SamplesPosterior,
    Scheduler,
    TextEmbedder,
    TextEmbedding,
    TrackedRun,
    Tracker,
    Trainable,
    TrainsJointly,
)
from .settings import ResolvedSettings, load_settings, resolve
from .settings import load as load_settings_files
from .tokens import pad_token_rows, truncate_token_rows

__version__ = "0.1.0"

_LAZY = {
    "BuildContext": ("modiff.assembly", "BuildContext"),
    "Components": ("modiff.assembly", "Components"),
    "build": ("modiff.assembly", "build"),
    "randn": ("modiff.noise", "randn"),
    "generators": ("modiff.noise", "generators"),
    "TrainingStep": ("modiff.training_step", "TrainingStep"),
    "Pipeline": ("modiff.pipeline", "Pipeline"),
    "RunDir": ("modiff.runs", "RunDir"),
    "CheckpointWriter": ("modiff.checkpoint", "CheckpointWriter"),
    "component_metadata": ("modiff.checkpoint", "component_metadata"),
    "atomic_write_text": ("modiff.files", "atomic_write_text"),
    "atomic_save_tensors": ("modiff.files", "atomic_save_tensors"),
    "start_job": ("modiff.local_launcher", "start_job"),
}

if TYPE_CHECKING:
    from .assembly import BuildContext, Components, build
    from .checkpoint import CheckpointWriter, component_metadata
    from .files import atomic_save_tensors, atomic_write_text
    from .local_launcher import start_job
    from .noise import generators, randn
    from .pipeline import Pipeline
    from .runs import RunDir
    from .training_step import TrainingStep


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
    "CheckpointWriter",
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
    "Factory",
    "Fittable",
    "GeneratingPipeline",
    "LaunchContext",
    "LaunchedRun",
    "Launcher",
    "ModiffError",
    "NoSettings",
    "Pipeline",
    "PluginError",
    "Register",
    "RegisterTask",
    "Registration",
    "Registry",
    "ResolvedSettings",
    "RunDir",
    "RunError",
    "RunJob",
    "SamplesPosterior",
    "Scheduler",
    "SettingsError",
    "TextEmbedder",
    "TextEmbedding",
    "ParamValue",
    "TrackedRun",
    "Tracker",
    "pad_token_rows",
    "truncate_token_rows",
    "Trainable",
    "TrainingStep",
    "TrainsJointly",
    "TruncationWarning",
    "UnknownWordWarning",
    "WeightsError",
    "atomic_save_tensors",
    "atomic_write_text",
    "build",
    "start_job",
    "component_metadata",
    "generators",
    "hookimpl",
    "load_settings",
    "load_settings_files",
    "randn",
    "registry",
    "registry_from",
    "resolve",
]
