"""Building every component of a run from resolved settings.

The order is fixed by what each role needs to know about the others:
dataset (image size, classes) -> encoder (latent channels, downscale) ->
text embedder (width) -> conditioner (what the denoiser will receive) ->
denoiser (shaped by all of the above) -> scheduler -> evaluator.

A trained run is rebuilt without its dataset: what the components learn from
the data when they are built is saved with the run (:class:`DataFacts`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .devices import resolve_device
from .errors import ModiffError, PluginError
from .plugins import registry
from .protocols import (
    Conditioner,
    ConditioningSpec,
    Dataset,
    DenoiserSpec,
    Encoder,
    Evaluator,
    Scheduler,
    TaskProtocol,
    TextEmbedder,
)
from .settings import ResolvedComponent, ResolvedSettings, RunSettings


@dataclass(frozen=True)
class DataFacts:
    """What building the components reads from the dataset, saved with a trained
    run so that loading it builds no dataset: a run whose training images are
    gone still generates, and loading never reads them again.

    Attributes:
        image_size: the images' pixel size.
        num_classes: mask classes including the background (0: no masks).
    """

    image_size: int
    num_classes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"image_size": self.image_size, "num_classes": self.num_classes}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataFacts:
        return cls(image_size=int(data["image_size"]), num_classes=int(data.get("num_classes", 0)))


@dataclass
class BuildContext:
    """What a factory may know about the run and the components built before it.

    Attributes:
        run: the ``[run]`` table (seed, device, precision, task name).
        task: the :class:`modiff.tasks.Task` the run learns; ``None`` for a
            component built on its own (a plugin's test): text-to-image, which
            adds no image context.
        device: the device components should live on.
        dataset, encoder, text_embedder, conditioner: built components, or
            ``None`` when not built (yet) or not configured.
        data: a trained run's :class:`DataFacts`, when it is rebuilt without
            its dataset (``Pipeline.load``).
        denoiser_spec: set just before the denoiser is built.
        assets: when building a trained run to restore it, the saved assets
            folder of each role that has one (``Pipeline.load``). A factory that
            would fit something to build its component (a tokenizer trained on
            the dataset's captions) reads it from here instead: loading a run
            does no training work.
    """

    run: RunSettings = field(default_factory=RunSettings)
    task: TaskProtocol | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dataset: Dataset | None = None
    encoder: Encoder | None = None
    text_embedder: TextEmbedder | None = None
    conditioner: Conditioner | None = None
    denoiser_spec: DenoiserSpec | None = None
    assets: dict[str, Path] = field(default_factory=dict)
    data: DataFacts | None = None

    @property
    def image_size(self) -> int:
        """Pixel size of the images: the dataset's (or, rebuilding a run, the one
        saved from it), else ``[run] image_size``."""
        if self.dataset is not None:
            return int(self.dataset.image_size)
        if self.data is not None:
            return self.data.image_size
        if self.run.image_size is not None:
            return self.run.image_size
        raise ModiffError("the image size is unknown: configure [data] or set [run] image_size")

    @property
    def latent_channels(self) -> int:
        return 3 if self.encoder is None else int(self.encoder.latent_channels)

    @property
    def latent_size(self) -> int:
        """Spatial size denoising runs at: image size over the encoder's downscale."""
        f = 1 if self.encoder is None else int(self.encoder.downscale)
        size = self.image_size
        if size % f:
            raise ModiffError(
                f"image size {size} is not a multiple of the encoder's downscale f = {f}; "
                f"choose an image size divisible by {f} or an encoder with a smaller downscale"
            )
        return size // f

    @property
    def num_classes(self) -> int:
        """Mask classes of the dataset (or the number saved from it); 0 without masks."""
        if self.dataset is not None:
            return int(getattr(self.dataset, "num_classes", 0))
        return 0 if self.data is None else self.data.num_classes

    @property
    def data_facts(self) -> DataFacts:
        """What the components read from the dataset, to save with a trained run."""
        return DataFacts(image_size=self.image_size, num_classes=self.num_classes)

    @property
    def image_context_channels(self) -> int:
        """Channels of image context the run's task concatenates (a mask, a
        masked-image latent); conditioners add them to their ``concat``."""
        return 0 if self.task is None else int(self.task.image_context_channels(self))


@dataclass
class Components:
    """The built components of one run, by role."""

    settings: ResolvedSettings
    context: BuildContext
    dataset: Dataset | None
    encoder: Encoder
    text_embedder: TextEmbedder | None
    conditioner: Conditioner | None
    denoiser: Any
    scheduler: Scheduler
    evaluator: Evaluator | None

    @property
    def task(self) -> TaskProtocol:
        """The run's :class:`modiff.tasks.Task`."""
        task = self.context.task
        assert task is not None, "build() gives the components their run's task"
        return task

    ROLES = ("data", "encoder", "text_embedder", "conditioner", "denoiser", "scheduler", "evaluator")

    def get(self, role: str) -> Any:
        return self.dataset if role == "data" else getattr(self, role)

    def modules(self) -> Iterator[tuple[str, torch.nn.Module]]:
        """``(role, module)`` for every component that holds weights."""
        for role in self.ROLES:
            comp = self.get(role)
            if isinstance(comp, torch.nn.Module):
                yield role, comp

    @property
    def device(self) -> torch.device:
        return self.context.device


def build_component(resolved: ResolvedComponent, context: BuildContext) -> Any:
    """Call one factory; any failure names the plugin and its distribution."""
    reg = resolved.registration
    try:
        component = reg.factory(resolved.params, context)
    except ModiffError:
        raise
    except Exception as exc:
        raise PluginError(
            f"{resolved.role} plugin {reg.name!r} (distribution {reg.distribution} {reg.version}) "
            f"failed to build: {type(exc).__name__}: {exc}. Check its settings, or report it to the plugin's authors."
        ) from exc
    if component is None:
        raise PluginError(f"{resolved.role} plugin {reg.name!r} ({reg.distribution}) built nothing (returned None)")
    return component


def apply_fast_paths(denoiser: torch.nn.Module, run: RunSettings) -> None:
    """``channels_last`` memory format and ``torch.compile`` as settings.

    Only ``forward`` is compiled, so the module, its parameter names and its
    state dict stay exactly as they are (checkpoints do not change format).
    Shapes are static: a run sees few of them (the training batch, the
    sampling batch doubled by guidance), and with symbolic shapes inductor
    failed on the SD-shaped UNet ("cannot determine truth value of
    Relational"); each new shape compiles once instead.
    """
    if run.channels_last:
        denoiser.to(memory_format=torch.channels_last)
    if run.compile:
        denoiser.forward = torch.compile(denoiser.forward, dynamic=False)  # type: ignore[method-assign]


def conditioning_spec(conditioner: Conditioner | None) -> ConditioningSpec:
    return ConditioningSpec() if conditioner is None else conditioner.spec


def build(
    settings: ResolvedSettings,
    *,
    device: torch.device | str | None = None,
    assets: Mapping[str, Path] | None = None,
    data: DataFacts | None = None,
) -> Components:
    """Build every configured component, in dependency order, on ``device``
    (default: the ``[run] device`` setting); ``assets`` as in :class:`BuildContext`.
    Given a trained run's ``data``, the dataset is not built: the components
    read those facts instead."""
    dev = (  # code may build on "meta" to inspect shapes; a user's [run] device may not
        resolve_device(device, source="device", allow_meta=True)
        if device is not None
        else resolve_device(settings.run.device)
    )
    task = settings.task
    if task is None:  # settings resolved by hand, without a registry
        task = registry().task(settings.run.task)
    ctx = BuildContext(run=settings.run, task=task, device=dev, assets=dict(assets or {}), data=data)
    built: dict[str, Any] = {}

    def make(role: str) -> Any:
        resolved = settings.components.get(role)
        if resolved is None:
            return None
        component = build_component(resolved, ctx)
        if isinstance(component, torch.nn.Module):
            component.to(dev)
        built[role] = component
        return component

    ctx.dataset = make("data") if data is None else None
    ctx.encoder = make("encoder")
    ctx.text_embedder = make("text_embedder")
    ctx.conditioner = make("conditioner")
    channels = ctx.latent_channels
    ctx.denoiser_spec = DenoiserSpec(
        in_channels=channels,
        out_channels=channels,
        sample_size=ctx.latent_size,
        conditioning=conditioning_spec(ctx.conditioner),
        num_classes=ctx.num_classes,
        head=task.head,
    )
    denoiser = make("denoiser")
    if isinstance(denoiser, torch.nn.Module):
        apply_fast_paths(denoiser, settings.run)
    scheduler = make("scheduler")
    evaluator = make("evaluator")
    return Components(
        settings=settings,
        context=ctx,
        dataset=ctx.dataset,
        encoder=ctx.encoder,  # type: ignore[arg-type]
        text_embedder=ctx.text_embedder,
        conditioner=ctx.conditioner,
        denoiser=denoiser,
        scheduler=scheduler,
        evaluator=evaluator,
    )
