"""Hook specifications: what a modiff plugin can implement.

A plugin is a module (or any object) with functions marked
``@modiff.hookimpl`` whose names are the hooks below. It is found through an
entry point in the ``modiff`` group of its distribution::

    [project.entry-points.modiff]
    modiff-myplugin = "modiff_myplugin"

The entry point's name only has to be unique among installed distributions
(the distribution's own name is a safe choice); two distributions declaring
the same one are both loaded and reported as a conflict by ``modiff plugins``.

When the hooks are called
=========================

Every registration hook (``register_<role>s(register)``) is called once per
process, the first time the registry is needed (``modiff train``, ``modiff
plugins``, ``modiff.registry()``), in no particular order between plugins.
A hook only *describes* components: it calls ``register`` once per component
and returns ``None`` (what counts is what it registered). Nothing is built
then; a factory runs only when a settings file names its component, with
the context of that role (each hook below says what its context holds).
A hook that raises marks its plugin as broken (listed by ``modiff plugins``
with the error) and every other plugin keeps working.

The ``register`` callback (:class:`Register`)
=============================================

``register(name, factory, settings_model=None, *, description=None)``:

* ``name`` — what settings files write as ``plugin = "name"``, following
  the one name rule, :data:`modiff.plugins.COMPONENT_NAME` (``kl-autoencoder``,
  ``dpmpp-2m``). If two distributions register the same name in one role,
  settings must say ``"distribution:name"``.
* ``factory(settings, context)`` — builds the component from a validated
  instance of ``settings_model`` and a :class:`modiff.BuildContext` holding
  the components built before it. Heavy imports belong inside the factory,
  so that listing plugins stays fast.
* ``settings_model`` — a pydantic model of the component's parameters
  (subclass :class:`modiff.ComponentSettings`, which forbids unknown keys);
  ``None`` means the component takes no parameters.
* ``description`` — one line for ``modiff plugins``; defaults to the first
  line of the factory's docstring.

A name that breaks the rule, a factory that is not callable or a settings
model that is not a pydantic class makes ``register`` raise, which marks the
plugin broken.

Example
=======

::

    import modiff

    class Settings(modiff.ComponentSettings):
        width: int = 64

    def build(settings: Settings, context: modiff.BuildContext) -> MyDenoiser:
        \"\"\"A small residual denoiser.\"\"\"
        from .model import MyDenoiser     # torch is imported here, not at import time

        return MyDenoiser(context.denoiser_spec, settings.width)

    @modiff.hookimpl
    def register_denoisers(register: modiff.Register) -> None:
        register("my-denoiser", build, Settings)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Protocol

import pluggy
from pydantic import BaseModel

from .protocols import TaskProtocol

# The hook specs sit at the bottom of the core (docs/concepts.md, "Layers"): they
# name the build context in words only and the task by its protocol, both of which
# live layers above, so that nothing here imports what is built on top of it.

PROJECT = "modiff"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: ``factory(settings, context) -> component``: the settings are an instance of
#: the registered settings model, the context a :class:`modiff.BuildContext`.
Factory = Callable[[Any, Any], Any]


class Register(Protocol):
    """The callback every registration hook receives (see the module docstring)."""

    def __call__(
        self,
        name: str,
        factory: Factory,
        settings_model: type[BaseModel] | None = None,
        *,
        description: str | None = None,
    ) -> None:
        """Register one component of the hook's role under ``name``.

        Raises:
            ValueError: ``name`` breaks :data:`modiff.plugins.COMPONENT_NAME`,
                or the plugin registered it twice in this role.
            TypeError: ``factory`` is not callable, or ``settings_model`` is
                not a pydantic model class.
        """
        ...


class RegisterTask(Protocol):
    """The callback ``register_tasks`` receives."""

    def __call__(self, task: TaskProtocol) -> None:
        """Register ``task`` (an instance of a :class:`modiff.tasks.Task` subclass).

        Raises:
            modiff.PluginError: not a Task, a name that breaks the rule, or a
                name another task has.
        """
        ...


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets (settings table ``[data]``).

    Args:
        register: call it once per dataset. The factory returns a
            :class:`modiff.protocols.Dataset`; datasets are built first, so
            its context has only the ``[run]`` table (``context.run``) and the device.

    Example::

        @modiff.hookimpl
        def register_datasets(register: modiff.Register) -> None:
            register("stripes", build_stripes, StripesSettings)
    """


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoders (``[encoder]``): pixel space, autoencoders.

    Args:
        register: call it once per encoder. The factory returns a
            :class:`modiff.protocols.Encoder`; ``context.image_size`` is the
            dataset's image size (loading a trained run, which builds no
            dataset: the size saved with it), else ``[run] image_size``.

    Example::

        @modiff.hookimpl
        def register_encoders(register: modiff.Register) -> None:
            register("space-to-depth", build_space_to_depth, SpaceToDepthSettings)
    """


@hookspec
def register_text_embedders(register: Register) -> None:
    """Register text embedders (``[text_embedder]``): word2vec, CLIP.

    Args:
        register: call it once per text embedder. The factory returns a
            :class:`modiff.protocols.TextEmbedder`; ``context.dataset`` gives
            the captions an embedder that trains on text may read. Loading a
            trained run builds no dataset: what the embedder learnt from the
            captions (a vocabulary, a tokenizer) comes back from its saved
            assets, ``context.assets["text_embedder"]``. Prompts
            longer than ``max_tokens`` are truncated with a
            :class:`modiff.TruncationWarning`.

    Example::

        @modiff.hookimpl
        def register_text_embedders(register: modiff.Register) -> None:
            register("hashed-words", build_hashed_words, HashedWordsSettings)
    """


@hookspec
def register_conditioners(register: Register) -> None:
    """Register conditioners (``[conditioner]``): concat, cross-attention.

    Args:
        register: call it once per conditioner. The factory returns a
            :class:`modiff.protocols.Conditioner`; ``context.text_embedder``
            (``None`` for unconditional runs), ``context.latent_size`` and
            ``context.latent_channels`` are available.

    Example::

        @modiff.hookimpl
        def register_conditioners(register: modiff.Register) -> None:
            register("film", build_film, FilmSettings)
    """


@hookspec
def register_denoisers(register: Register) -> None:
    """Register denoisers (``[denoiser]``): the UNet, a transformer.

    Args:
        register: call it once per denoiser. The factory returns a
            :class:`modiff.protocols.Denoiser` shaped after
            ``context.denoiser_spec`` (input channels, sample size,
            conditioning widths), which the core derives from the encoder
            and the conditioner.

    Example::

        @modiff.hookimpl
        def register_denoisers(register: modiff.Register) -> None:
            register("my-denoiser", build, MyDenoiserSettings)
    """


@hookspec
def register_schedulers(register: Register) -> None:
    """Register noise schedules and samplers (``[scheduler]``).

    Args:
        register: call it once per sampler. The factory returns a
            :class:`modiff.protocols.Scheduler`. A settings model that
            declares ``schedule_keys`` (see :mod:`modiff.sampler_swap`) lets
            ``Pipeline.with_sampler`` carry the run's noise schedule to it.

    Example::

        @modiff.hookimpl
        def register_schedulers(register: modiff.Register) -> None:
            register("cosine-ddim", build_cosine_ddim, CosineSettings)
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators (``[evaluator]``).

    Args:
        register: call it once per evaluator. The factory returns a
            :class:`modiff.protocols.Evaluator`, whose ``evaluate`` receives
            a :class:`modiff.protocols.GeneratingPipeline`.

    Example::

        @modiff.hookimpl
        def register_evaluators(register: modiff.Register) -> None:
            register("image-stats", build_image_stats, ImageStatsSettings)
    """


@hookspec
def register_trackers(register: Register) -> None:
    """Register trackers (``[track] plugins = [...]``): TensorBoard, MLflow.

    Unlike the roles above, a run may use several trackers at once, none by
    default; each takes its options from its own table, ``[track.NAME]``.

    Args:
        register: call it once per tracker. The factory returns a
            :class:`modiff.protocols.Tracker`; its context is the
            :class:`modiff.protocols.TrackedRun` that ``start`` will receive
            (run folder, runs folder, the id to resume). It is called on the
            main process only, when training starts or resumes. Import the
            tracking library inside the factory: the core never depends on one.

    Example::

        @modiff.hookimpl
        def register_trackers(register: modiff.Register) -> None:
            register("csv-log", build_csv_log, CsvLogSettings)
    """



@hookspec
def register_launchers(register: Register) -> None:
    """Register launchers: where an ablation's runs execute (``[launcher] name``
    in an ablation file, or ``modiff ablate --launcher NAME``).

    The core registers ``local`` (one process per run on this machine, as
    ``--jobs N``) through this hook, as a plugin registers ``ray``. The driver
    stays the only coordinator: it orders the runs, holds back those that
    could share a stage, and hands the launcher one
    :class:`modiff.protocols.RunJob` at a time; the launcher only places it.

    Args:
        register: call it once per launcher. The factory returns a
            :class:`modiff.protocols.Launcher`; its settings are the
            ``[launcher]`` table's keys but ``name`` (validated by the settings
            model), its context a :class:`modiff.protocols.LaunchContext`
            (``--jobs``, the runs folder, ``log`` for lines in the driver's
            output). It is called once per ``modiff
            ablate``, in the driver only. Import the cluster's library inside
            the factory: the core never depends on one.

    Example::

        @modiff.hookimpl
        def register_launchers(register: modiff.Register) -> None:
            register("my-cluster", build_my_cluster, MyClusterSettings)
    """

@hookspec
def register_tasks(register: RegisterTask) -> None:
    """Register tasks: what a run may name in ``[run] task``.

    Called: the first time a task is looked up (tasks import torch), not
    when the registry is loaded.

    Args:
        register: ``register(task)`` takes an instance of a
            :class:`modiff.tasks.Task` subclass, whose ``name`` follows the
            component-name rule and must not clash with the core's tasks
            (text-to-image, mask-to-image, inpainting, segmentation) or another
            plugin's. A task says what the denoiser sees and outputs, its loss,
            how its samples look, and what a generation takes and returns
            (its inputs become options of ``modiff generate``); see
            ``docs/tasks.md``.

    Example::

        @modiff.hookimpl
        def register_tasks(register: modiff.RegisterTask) -> None:
            from .task import Colourise     # a modiff.tasks.Task subclass

            register(Colourise())
    """


@hookspec
def register_commands(cli: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add subcommands to the ``modiff`` command line.

    Called: once per ``modiff`` invocation, while the command line is built
    (after the registry is loaded), so ``modiff --help`` lists the commands.
    A hook that raises is reported on stderr and the other commands work.

    Args:
        cli: the ``argparse`` sub-parser collection of ``modiff``. Call
            ``cli.add_parser(name, help=...)`` and set the handler with
            ``parser.set_defaults(func=handler)``; ``handler(args)`` returns
            the exit status. A :class:`modiff.ModiffError` raised by the
            handler is printed without a traceback and exits with status 2.

    Example::

        @modiff.hookimpl
        def register_commands(cli: argparse._SubParsersAction) -> None:
            parser = cli.add_parser("import-thing", help="make a run from a thing")
            parser.add_argument("source")
            parser.set_defaults(func=run_import)
    """
