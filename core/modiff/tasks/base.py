"""The :class:`Task` interface; its defaults are the text-to-image task's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ModiffError
from ..grids import write_grid
from ..parameters import Sampling
from .generation import Generated, GenerationRequest, Input, Output

if TYPE_CHECKING:
    import torch

    from ..assembly import BuildContext, Components
    from ..distributed import World
    from ..pipeline import Pipeline
    from ..protocols import Batch, TextEmbedding

#: ``loss(batch, dataset_indices, step_generator) -> scalar``: one training step's loss.
StepLoss = Callable[["Batch", Sequence[int], "torch.Generator"], "torch.Tensor"]


class Task:
    """What a run learns to do; subclass it for a new task.

    Class attributes say what the task needs; methods say what differs. The
    defaults are the text-to-image task, so a subclass overrides only what is
    its own.

    Attributes:
        name: what ``[run] task`` says (lower case, digits and dashes).
        description: one line for documentation and error messages.
        head: what the denoiser outputs, handed to its factory as
            ``DenoiserSpec.head``: ``"denoise"`` (a prediction shaped like its
            input) or ``"segment"`` (per-pixel class logits, no time input).
        uses_scheduler: whether the task adds noise and samples (False: no
            ``[scheduler]`` table is needed).
        needs_masks: whether training needs a dataset with masks.
        usage: what to do with a trained run, ``{run}`` replaced by its path.
        takes_prompts: whether a generation takes prompts (``modiff generate
            RUN PROMPT...``); a task that takes none generates from its inputs.
        inputs: what a generation takes beyond its prompts and sampling
            parameters, one :class:`Input` each (``modiff generate`` gives each
            an option ``--NAME``).
        outputs: what a generation returns, one :class:`Output` per kind
            (``modiff generate`` writes each kind with its writer).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    head: ClassVar[str] = "denoise"
    uses_scheduler: ClassVar[bool] = True
    needs_masks: ClassVar[bool] = False
    usage: ClassVar[str] = 'generate images with `modiff generate {run} "a prompt"`'
    takes_prompts: ClassVar[bool] = True
    inputs: ClassVar[tuple[Input, ...]] = ()
    outputs: ClassVar[tuple[Output, ...]] = (Output("images"),)

    @property
    def generates_from_prompts(self) -> bool:
        """Whether prompts alone make images (:meth:`modiff.pipeline.Pipeline.generate`):
        what a text-to-image feature (a comparison grid, prompt accuracy) needs.
        True for a task that takes prompts, samples, requires no input, returns
        images and concatenates no image context of its own (a task that does
        cannot be sampled without it)."""
        adds_context = type(self).image_context_channels is not Task.image_context_channels
        return (
            self.takes_prompts
            and self.uses_scheduler
            and not adds_context
            and not any(i.required for i in self.inputs)
            and any(o.kind == "images" for o in self.outputs)
        )

    def generate(self, pipeline: Pipeline, request: GenerationRequest) -> Generated:
        """One generation from its resolved request: by default, images for the
        prompts. A task with inputs of its own reads them from
        ``request.inputs`` and returns each of its :attr:`outputs`."""
        sampling = self._sampling(request)
        images = pipeline.generate_tensor(list(request.prompts), seeds=list(request.seeds), **sampling.options())
        return Generated({"images": images}, sampling)

    def _sampling(self, request: GenerationRequest) -> Sampling:
        if request.sampling is None:
            raise ModiffError(f"task {self.name!r} samples, but its generation has no sampling parameters")
        return request.sampling

    def image_context_channels(self, context: BuildContext) -> int:
        """Channels of image context concatenated to ``x_t`` (a mask, a masked-image
        latent); conditioners add them to their ``concat``. 0 for none."""
        return 0

    def training_image_context(
        self, components: Components, batch: Batch, generator: torch.Generator, share: slice
    ) -> torch.Tensor | None:
        """The image context of a training batch (``None`` for none).

        Random choices must be drawn for the global batch from ``generator``
        and sliced to this rank's ``share``, like every other draw of a step,
        so that N processes train as one.
        """
        return None

    def training_loss(
        self,
        components: Components,
        *,
        latents: Callable[..., torch.Tensor],
        text: Callable[[Sequence[str], Sequence[int]], TextEmbedding] | None,
        condition_dropout: float,
        world: World,
    ) -> StepLoss:
        """The loss of the denoiser stage: by default, denoising with this task's
        image context. ``latents(images, indices, step)`` and ``text(captions,
        indices)`` give a batch's latents and text embedding (cached where the
        components are frozen); ``indices`` are the batch's dataset indices and
        ``step`` the step's :class:`modiff.TrainingStep`."""
        from ..training.losses import DenoiserLoss  # training loads when a run trains, never to generate

        return DenoiserLoss(
            components, latents, text, condition_dropout, world, image_context=self.training_image_context
        )

    def write_samples(self, pipeline: Pipeline, prompts: Sequence[str], path: Path, **kwargs: Any) -> Path | None:
        """A picture of what the trained run does, written to ``path``
        (``None`` when the task draws none)."""
        return write_grid(pipeline, prompts, path, **kwargs)

    def check(self, components: Components) -> None:
        """Raise a :class:`modiff.ModiffError` if the built components cannot do
        this task (called before training)."""
        if self.needs_masks and components.dataset is not None and not getattr(components.dataset, "num_classes", 0):
            raise ModiffError(
                f"task {self.name!r} needs a dataset with segmentation masks, but the [data] plugin gives none"
            )

    def __repr__(self) -> str:
        return f"<task {self.name!r}>"
