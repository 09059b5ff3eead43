"""Hook specifications: what a modiff plugin can implement.

A plugin is a module (or any object) with functions marked
``@modiff.hookimpl`` whose names are the hooks below. It is found through an
entry point in the ``modiff`` group of its distribution::

    [project.entry-points.modiff]
    myplugin = "modiff_myplugin"

and each registration hook receives a ``register`` callback, called once per
component the plugin provides::

    import modiff

    class Settings(modiff.ComponentSettings):
        width: int = 64

    def build(settings: Settings, context: modiff.BuildContext):
        return MyDenoiser(context.denoiser_spec, settings.width)

    @modiff.hookimpl
    def register_denoisers(register):
        register("my-denoiser", build, Settings)

``register(name, factory, settings_model=None, *, description=None)``:

* ``name`` — what settings files write as ``plugin = "name"``; lower case,
  digits and dashes. If two distributions register the same name in one role,
  settings must say ``"distribution:name"``.
* ``factory(settings, context)`` — builds the component from a validated
  instance of ``settings_model`` and a :class:`modiff.BuildContext` holding
  the components built before it. Heavy imports belong inside the factory,
  so that listing plugins stays fast.
* ``settings_model`` — a pydantic model of the component's parameters
  (``modiff.ComponentSettings`` forbids unknown keys); ``None`` means the
  component takes no parameters.
* ``description`` — one line for ``modiff plugins``; defaults to the first
  line of the factory's docstring.

Hooks are called once per process, when the registry is first needed. A hook
that raises marks its plugin as broken (listed by ``modiff plugins``) and the
other plugins keep working.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "modiff"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_datasets(register: Any) -> None:
    """Register datasets (role ``data``).

    A dataset factory returns a :class:`modiff.protocols.Dataset`. Its
    context has only the run settings: datasets are built first.
    """


@hookspec
def register_encoders(register: Any) -> None:
    """Register encoders (role ``encoder``): pixel space, autoencoders.

    The factory returns a :class:`modiff.protocols.Encoder`; ``context.dataset``
    is available (to read ``image_size``).
    """


@hookspec
def register_text_embedders(register: Any) -> None:
    """Register text embedders (role ``text_embedder``): word2vec, CLIP.

    The factory returns a :class:`modiff.protocols.TextEmbedder`.
    """


@hookspec
def register_conditioners(register: Any) -> None:
    """Register conditioners (role ``conditioner``): concat, cross-attention.

    The factory returns a :class:`modiff.protocols.Conditioner`;
    ``context.text_embedder`` (possibly ``None`` for unconditional runs) and
    ``context.latent_size``/``context.latent_channels`` are available.
    """


@hookspec
def register_denoisers(register: Any) -> None:
    """Register denoisers (role ``denoiser``): the UNet, a transformer.

    The factory returns a :class:`modiff.protocols.Denoiser` shaped after
    ``context.denoiser_spec`` (input channels, sample size, conditioning
    widths), which the core derives from the encoder and conditioner.
    """


@hookspec
def register_schedulers(register: Any) -> None:
    """Register noise schedules and samplers (role ``scheduler``).

    The factory returns a :class:`modiff.protocols.Scheduler`.
    """


@hookspec
def register_evaluators(register: Any) -> None:
    """Register evaluators (role ``evaluator``).

    The factory returns a :class:`modiff.protocols.Evaluator`.
    """


@hookspec
def register_tasks(register: Any) -> None:
    """Register tasks: what a run may name in ``[run] task``.

    ``register(task)`` takes an instance of a :class:`modiff.tasks.Task`
    subclass; its ``name`` must not clash with the core's tasks
    (text-to-image, mask-to-image, inpainting, segmentation) or another
    plugin's. A task says what the denoiser sees and outputs, its loss, and
    how its samples look; see ``docs/tasks.md``.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``modiff`` command line.

    ``cli`` is an ``argparse`` sub-parser collection: call
    ``cli.add_parser(name, help=...)`` and set ``func`` with
    ``parser.set_defaults(func=handler)``; ``handler(args)`` returns an exit
    status.
    """
