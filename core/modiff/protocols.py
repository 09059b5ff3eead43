"""The roles a latent-diffusion model is made of, as structural protocols.

The core talks to components only through these protocols; it never imports a
plugin. A plugin's component satisfies a protocol by having the right methods
and attributes (structural typing), not by inheriting from anything here.

Conventions shared by every protocol:

* Images are float tensors ``[B, 3, H, W]`` with values in ``[-1, 1]``.
* Latents are float tensors ``[B, C, H / f, W / f]`` where ``C`` is the
  encoder's ``latent_channels`` and ``f`` its ``downscale``; after
  ``encode`` they are already multiplied by ``scaling_factor`` so that they
  have roughly unit variance, which is what the noise schedule assumes.
* Timesteps ``t`` are float tensors ``[B]`` on the training scale
  ``[0, num_train_timesteps)``; samplers with continuous noise levels pass
  fractional values.
* Masks over tokens are ``bool`` tensors ``[B, L]``, ``True`` for a real token
  and ``False`` for padding.
* Segmentation masks are ``int64`` tensors ``[B, H, W]`` of class indices,
  0 being the background.

Components that learn by gradient descent are ``torch.nn.Module`` instances
and additionally satisfy :class:`Trainable`; the core owns the training loop
(optimizer, precision, EMA, checkpoints, distribution). Components fitted
some other way (word2vec through gensim) satisfy :class:`Fittable`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is imported lazily so `modiff plugins` stays fast.
    import torch
    from torch import Tensor

    from .training_step import TrainingStep

__all__ = [
    "Batch",
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
    "GeneratingPipeline",
    "HasAssets",
    "ModelFn",
    "SampleCallback",
    "SamplesPosterior",
    "Scheduler",
    "TaskProtocol",
    "TextEmbedder",
    "TextEmbedding",
    "Trainable",
    "TrainsJointly",
    "samples_posterior",
    "trains_jointly",
]


# --------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TextEmbedding:
    """What a text embedder makes of a batch of prompts.

    Attributes:
        tokens: ``[B, L, D]`` float, one vector per token position (``L`` is
            the embedder's ``max_tokens`` or the longest prompt in the batch).
        mask: ``[B, L]`` bool, ``True`` where ``tokens`` holds a real token.
            Real tokens come first (padding is on the right) and every row
            has at least one real token, even for an empty prompt.
            Positions that are ``False`` must not influence anything
            downstream: conditioners and denoisers mask them out.
        pooled: ``[B, D]`` float, one vector per prompt (CLIP's pooled output,
            a masked mean for word vectors).
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def index(self, index: Any) -> TextEmbedding:
        """Rows ``index`` of every field (a slice, an index tensor or a list)."""
        return TextEmbedding(self.tokens[index], self.mask[index], self.pooled[index])


@dataclass(frozen=True)
class Conditioning:
    """What a conditioner hands the denoiser; every field is optional.

    Attributes:
        concat: ``[B, C_c, h, w]`` extra input channels at the denoiser's
            input resolution, concatenated to ``x_t`` (text broadcast as
            feature maps, a segmentation map, a masked image latent).
        context: ``[B, L, D_ctx]`` sequence the denoiser cross-attends to.
        context_mask: ``[B, L]`` bool, ``True`` for real context positions.
        vector: ``[B, D_vec]`` added to the time embedding (class-conditional
            style).
    """

    concat: Tensor | None = None
    context: Tensor | None = None
    context_mask: Tensor | None = None
    vector: Tensor | None = None

    def _fields(self) -> dict[str, Tensor | None]:
        return {
            "concat": self.concat,
            "context": self.context,
            "context_mask": self.context_mask,
            "vector": self.vector,
        }

    def map(self, fn: Callable[[Tensor], Tensor]) -> Conditioning:
        """Apply ``fn`` to every tensor that is present."""
        return Conditioning(**{k: None if v is None else fn(v) for k, v in self._fields().items()})

    def index(self, index: Any) -> Conditioning:
        """Rows ``index`` of every field that is present."""
        return self.map(lambda v: v[index])

    def to(self, *args: Any, **kwargs: Any) -> Conditioning:
        """Move floating tensors like ``Tensor.to``; bool masks keep their dtype."""

        def move(v: Tensor) -> Tensor:
            if v.is_floating_point():
                return v.to(*args, **kwargs)
            device = kwargs.get("device") or next((a for a in args if not _is_dtype(a)), None)
            return v if device is None else v.to(device)

        return self.map(move)

    @staticmethod
    def cat(items: Sequence[Conditioning]) -> Conditioning:
        """Concatenate along the batch, padding contexts of unequal length.

        Classifier-free guidance runs the conditional and the unconditional
        halves in one batch; their contexts may have different lengths, so
        the shorter one is zero-padded and its mask extended with ``False``.
        """
        import torch

        if not items:
            raise ValueError("Conditioning.cat needs at least one item")
        out: dict[str, Tensor | None] = {}
        for name in ("concat", "vector"):
            values = [getattr(c, name) for c in items]
            out[name] = _cat_or_none(name, values)
        contexts = [c.context for c in items]
        if all(v is None for v in contexts):
            out["context"] = out["context_mask"] = None
        else:
            if any(v is None for v in contexts):
                raise ValueError("cannot concatenate conditionings with and without a context")
            length = max(int(v.shape[1]) for v in contexts)  # type: ignore[union-attr]
            padded, masks = [], []
            for c in items:
                ctx = c.context
                assert ctx is not None
                mask = c.context_mask
                if mask is None:
                    mask = torch.ones(ctx.shape[:2], dtype=torch.bool, device=ctx.device)
                pad = length - int(ctx.shape[1])
                if pad:
                    ctx = torch.nn.functional.pad(ctx, (0, 0, 0, pad))
                    mask = torch.nn.functional.pad(mask, (0, pad), value=False)
                padded.append(ctx)
                masks.append(mask)
            out["context"] = torch.cat(padded)
            out["context_mask"] = torch.cat(masks)
        return Conditioning(**out)

    def where(self, use_other: Tensor, other: Conditioning) -> Conditioning:
        """Row ``i`` from ``other`` where ``use_other[i]`` is True, else from self.

        This is how condition dropout swaps captions for the null conditioning
        per sample; contexts of different lengths are padded first.
        """
        import torch

        if use_other.device.type == "cpu" and not bool(use_other.any()):
            return self  # (not asked on a GPU: reading the answer would wait for it)
        both = Conditioning.cat([self, other])
        n = int(use_other.shape[0])
        rows = torch.arange(n, device=use_other.device)
        return both.index(torch.where(use_other.to(torch.bool), rows + n, rows))

    def with_concat(self, extra: Tensor | None) -> Conditioning:
        """A copy with ``extra`` channels appended to ``concat``."""
        import torch

        if extra is None:
            return self
        concat = extra if self.concat is None else torch.cat([self.concat, extra], dim=1)
        return replace(self, concat=concat)


def _is_dtype(value: Any) -> bool:
    import torch

    return isinstance(value, torch.dtype)


def _cat_or_none(name: str, values: list[Tensor | None]) -> Tensor | None:
    import torch

    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise ValueError(f"cannot concatenate conditionings where only some have {name!r}")
    return torch.cat(values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ConditioningSpec:
    """What a conditioner promises the denoiser, known before anything runs.

    Attributes:
        concat_channels: channels of ``Conditioning.concat`` (0 for none).
        context_dim: width of ``Conditioning.context`` (``None`` for none).
        vector_dim: width of ``Conditioning.vector`` (``None`` for none).
    """

    concat_channels: int = 0
    context_dim: int | None = None
    vector_dim: int | None = None


@dataclass(frozen=True)
class DenoiserSpec:
    """What the assembly tells a denoiser factory about its neighbours.

    Attributes:
        in_channels: channels of ``x_t`` (the encoder's latent channels).
        out_channels: channels of the prediction (equal to ``in_channels``
            for a denoising head; ignored by a segmentation head).
        sample_size: spatial size of ``x_t`` (image size / downscale).
        conditioning: the conditioner's :class:`ConditioningSpec`.
        num_classes: classes of a segmentation target (0 when there is none).
        head: what the run's task asks the denoiser to output: ``"denoise"``
            (a prediction shaped like ``x_t``) or ``"segment"`` (``num_classes``
            logits per pixel; ``t`` is ignored).
    """

    in_channels: int
    out_channels: int
    sample_size: int
    conditioning: ConditioningSpec = field(default_factory=ConditioningSpec)
    num_classes: int = 0
    head: str = "denoise"


@dataclass(frozen=True)
class Example:
    """One item of a dataset.

    Attributes:
        image: ``[3, H, W]`` float in ``[-1, 1]``.
        caption: the text describing the image.
        mask: ``[H, W]`` int64 class map, or ``None`` when the dataset has none.
    """

    image: Tensor
    caption: str
    mask: Tensor | None = None


@dataclass(frozen=True)
class Batch:
    """A collated batch of examples, as training losses receive it.

    Attributes:
        images: ``[B, 3, H, W]`` float in ``[-1, 1]``.
        captions: ``B`` strings.
        masks: ``[B, H, W]`` int64, or ``None``.
    """

    images: Tensor
    captions: list[str]
    masks: Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device`` (from the CPU to CUDA without making the host wait)."""
        from .noise import to_device  # noise imports torch, which this module leaves to its users

        masks = None if self.masks is None else to_device(self.masks, device)
        return Batch(to_device(self.images, device), self.captions, masks)


ModelFn = Callable[["Tensor", "Tensor"], "Tensor"]
"""``model_fn(x_t, t) -> prediction``: the denoiser with conditioning and
guidance already bound. ``x_t`` is on the variance-preserving scale
(``sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * noise``), ``t`` is ``[B]``
float timesteps, and the prediction is in the scheduler's ``prediction_type``."""

SampleCallback = Callable[[int, "Tensor", "Tensor", "Tensor"], None]
"""``callback(step_index, t, x_t, x0_pred)``, called once per sampler step,
for progress bars and trajectories."""


# --------------------------------------------------------------------------
# Component protocols
# --------------------------------------------------------------------------


@runtime_checkable
class Encoder(Protocol):
    """Moves images to the space denoising happens in, and back.

    Pixel space is the identity (``downscale == 1``); latent space is a KL
    autoencoder whose latents are ``downscale`` times smaller per side, which
    is what makes latent diffusion cheap.
    """

    latent_channels: int
    downscale: int
    scaling_factor: float

    def encode(self, images: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``[B, 3, H, W]`` images in [-1, 1] to scaled latents ``[B, C, H/f, W/f]``.

        ``H`` and ``W`` must be multiples of ``downscale``; anything else is a
        ``ValueError`` naming the size and ``f``.
        """
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents back to ``[B, 3, H, W]`` images (not clamped)."""
        ...


@runtime_checkable
class TextEmbedder(Protocol):
    """Turns prompts into vectors: one per token and one pooled per prompt."""

    dim: int
    max_tokens: int

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        """Embed ``B`` prompts. Any string is accepted: empty, unicode, long
        (truncated to ``max_tokens`` with a warning)."""
        ...


@runtime_checkable
class Conditioner(Protocol):
    """Turns a text embedding (and optionally an image context) into what the
    denoiser consumes, and knows the "empty" conditioning that classifier-free
    guidance and condition dropout use."""

    spec: ConditioningSpec

    def condition(
        self,
        text: TextEmbedding | None,
        *,
        image_context: Tensor | None = None,
        batch_size: int | None = None,
    ) -> Conditioning:
        """Conditioning for a batch.

        Args:
            text: the prompts' embedding, or ``None`` for unconditional use.
            image_context: ``[B, C_img, h, w]`` extra channels already at the
                denoiser's resolution (a mask or a masked-image latent).
            batch_size: required when ``text`` is ``None``.
        """
        ...

    def null(
        self, batch_size: int, *, like: TextEmbedding | None = None, image_context: Tensor | None = None
    ) -> Conditioning:
        """The conditioning with the text left out, for ``batch_size`` samples.

        ``like`` is the text embedding the null will be mixed with (condition
        dropout swaps rows, guidance batches both): a null context of the same
        length avoids padding. ``image_context`` is kept as it is: guidance
        and dropout act on the text only.
        """
        ...


@runtime_checkable
class Denoiser(Protocol):
    """Predicts, from a noisy input and its timestep, the scheduler's target
    (noise, velocity or clean sample); or, with a segmentation head,
    per-pixel class logits (``t`` is then ignored)."""

    spec: DenoiserSpec

    def __call__(self, x_t: Tensor, t: Tensor, conditioning: Conditioning) -> Tensor:
        """``[B, C, h, w]``, ``[B]``, conditioning -> ``[B, C_out, h, w]``."""
        ...


@runtime_checkable
class Scheduler(Protocol):
    """A noise schedule (training side) and a sampler over it (sampling side).

    Samplers are pure: ``sample`` runs its own loop over ``model_fn`` and keeps
    nothing between calls, so one trained model can be sampled by any sampler
    of the same noise schedule.
    """

    prediction_type: str  # "epsilon", "v_prediction" or "sample"
    num_train_timesteps: int

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``x_t`` for integer or float timesteps ``t`` ``[B]``."""
        ...

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the denoiser must predict at ``t``, per ``prediction_type``."""
        ...

    def sample_timesteps(
        self, batch_size: int, *, generator: torch.Generator | None = None, device: Any = None
    ) -> Tensor:
        """Training timesteps ``[B]`` (int64)."""
        ...

    def loss_weight(self, t: Tensor) -> Tensor:
        """Per-sample loss weights ``[B]`` (ones for the plain objective)."""
        ...

    def sample(
        self,
        model_fn: ModelFn,
        noise: Tensor,
        steps: int,
        *,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        callback: SampleCallback | None = None,
        start_step: int = 0,
    ) -> Tensor:
        """Run the sampler from ``noise`` and return the clean sample.

        ``start_step > 0`` skips the first steps (img2img): ``noise`` must then
        be ``x_t`` at ``timesteps(steps)[start_step]``, made with
        ``add_noise``. Random draws come from ``generator``; a sequence gives
        one generator per sample, so sample ``i`` does not depend on the
        others.
        """
        ...

    def timesteps(self, steps: int) -> Tensor:
        """The timesteps ``sample`` visits for ``steps`` steps, first to last."""
        ...


@runtime_checkable
class Dataset(Protocol):
    """Examples of image, caption and optional mask; deterministic by index."""

    image_size: int
    num_classes: int  # segmentation classes including background; 0 if no masks

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Example: ...

    def captions(self) -> Iterable[str]:
        """The caption corpus, for text embedders that fit on text."""
        ...


class PipelineComponents(Protocol):
    """What an evaluator may read of a pipeline's built components."""

    @property
    def dataset(self) -> Dataset | None:
        """The run's dataset (``None`` for a run that only generates)."""
        ...


@runtime_checkable
class GeneratingPipeline(Protocol):
    """What an :class:`Evaluator` may use of a trained pipeline.

    :class:`modiff.Pipeline` satisfies it; an evaluator's tests can pass a
    small stand-in that draws known images instead. (Task operations such as
    :func:`modiff.tasks.segment` take the pipeline itself.) Generation options an
    evaluator does not give take the run's ``[sample]`` defaults; sample
    ``i`` is seeded with ``seed + i`` alone, so results do not depend on
    the batch size.
    """

    @property
    def image_size(self) -> int:
        """Pixel size of the generated images."""
        ...

    @property
    def components(self) -> PipelineComponents:
        """The built components (an evaluator reads ``components.dataset``)."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        batch_size: int | None = None,
    ) -> list[Any]:
        """One RGB ``PIL.Image.Image`` per prompt."""
        ...

    def generate_tensor(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        batch_size: int | None = None,
    ) -> Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1], not clamped (for statistics that
        must see values outside the range)."""
        ...


@runtime_checkable
class Evaluator(Protocol):
    """Numbers for a trained pipeline."""

    def evaluate(self, pipeline: GeneratingPipeline, *, prompts: Sequence[str] | None = None) -> Mapping[str, Any]:
        """Evaluate ``pipeline`` (a :class:`modiff.Pipeline`, or anything that
        satisfies :class:`GeneratingPipeline`) and return a flat mapping of
        metric names to numbers (and optionally lists/dicts)."""
        ...


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker is told about the run it tracks (``Tracker.start``).

    ``run_id`` is what this tracker's ``start`` returned when the run began,
    kept in the run's checkpoint: a resumed run hands it back so that the
    tracker continues the same tracked run. ``resume_after`` is then the last
    step the checkpoint holds: the steps after it are taken (and logged)
    again, so a tracker drops what it logged above it, or ignores the
    repeats. Steps count across the run's stages in order (the denoiser's
    step ``s`` in a run whose encoder trained 1000 steps is ``1000 + s``), so
    one series of steps covers the whole run. ``group`` names the experiment
    the run belongs to (an ablation's name; ``None``: the tracker's default)
    and ``tags`` what tells it from the group's other runs (variant, seed).
    """

    name: str
    path: Path
    runs_dir: Path
    run_id: str | None = None
    resume_after: int | None = None
    group: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


#: A parameter's value as trackers receive it: settings flattened to ``table.key``.
ParamValue = str | int | float | bool


@runtime_checkable
class Tracker(Protocol):
    """Where a run is watched besides its own files: TensorBoard, MLflow (``[track]``).

    The core feeds every tracker the run's settings as parameters, every
    logged scalar (losses, learning rates, step times, evaluations), the
    sample grids and denoising trajectories as PNG files, and the run's result
    files at the end; ``metrics.jsonl`` stays the record the report reads.
    Only the main process of a distributed run builds trackers. Any method may
    raise (a server down, a full disk): the core then warns once, naming the
    tracker and what failed, calls ``close`` and drops it for the rest of the
    run, so every method, ``close`` above all, must be safe to call after an
    earlier one failed.
    """

    def start(self, run: TrackedRun) -> str:
        """Open the tracked run (a new one, or ``run.run_id`` again when resuming)
        and return its id, which the core keeps in the checkpoint."""
        ...

    def log_params(self, params: Mapping[str, ParamValue]) -> None:
        """The resolved settings, flattened (``train.lr``, ``denoiser.channels``), once per start."""
        ...

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Scalars at ``step``, named ``stage/name`` (``denoiser/loss``, ``eval/accuracy``)."""
        ...

    def log_image(self, step: int, name: str, image: Path) -> None:
        """A PNG file (a sample grid, a denoising trajectory) at ``step`` under ``name``."""
        ...

    def log_artifacts(self, files: Sequence[Path]) -> None:
        """The run's result files, when training ends."""
        ...

    def close(self) -> None:
        """Flush and release everything; called once at the end, or after a failure."""
        ...



# --------------------------------------------------------------------------
# Launchers: where an ablation's runs execute (``[launcher]``, ``--launcher``)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchContext:
    """What a launcher's factory is told about the grid it will run.

    ``jobs`` is ``--jobs N`` when the user gave it (``None`` otherwise): the
    local launcher's number of slots, a cap on the others'. ``runs_dir`` is
    the ablation's output folder, which every worker must see at the same
    path (the runs, their logs and the stage cache live there). ``log``
    writes a line in the driver's output (above its progress bars), so a
    launcher can say what it did on its own, a job resubmitted or taken
    over, where the user watches the grid; ``None`` outside a driver.
    """

    jobs: int | None
    runs_dir: Path
    log: Callable[[str], None] | None = None


@dataclass(frozen=True)
class RunJob:
    """One run of a grid, as the driver hands it to a launcher.

    ``argv`` is the whole command (``argv[0]`` the driver's Python, then
    ``-m modiff ablate FILE --run NAME --threads N``); it trains the run,
    resuming from its last checkpoint, and writes the run's record, so a
    launcher that runs it again after a failure loses at most the steps after
    that checkpoint. ``env`` holds the variables to set on top of the worker's
    own (the thread count among them). ``cpus`` and ``gpus`` are what the run
    needs (``gpus`` is 1 when the run's device is CUDA): the run trains with
    ``cpus`` threads under every launcher, because its stage keys, and so
    its bits, depend on the thread count. Output goes to ``log_path``;
    ``cwd`` is the driver's working directory (relative paths in the
    settings are relative to it).
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cpus: int
    gpus: int
    log_path: Path
    cwd: Path


@runtime_checkable
class LaunchedRun(Protocol):
    """A run a launcher started: the driver polls it until it ends.

    ``node`` names where it ran (a host, a Ray node id), once known, else
    ``None``; the driver writes it on the run's record. ``error`` says why it
    could not run when the launcher knows better than the run's log (its
    node cannot see the runs folder, the launcher gave up retrying), else
    ``None``.
    """

    node: str | None
    error: str | None

    def poll(self) -> int | None:
        """The command's exit code once the run ended (for good: after any
        retries of the launcher's own), ``None`` while it runs or waits."""
        ...

    def cancel(self) -> None:
        """Ask the run to stop as Ctrl-C stops a run (it ends its step, keeps a
        checkpoint and exits); returns at once: :meth:`poll` says when it ended."""
        ...


@runtime_checkable
class Launcher(Protocol):
    """Where an ablation's runs execute: this machine's cores, a Ray cluster, Slurm.

    The driver (``modiff ablate``) stays the only coordinator: it decides
    which run starts when (runs that could share a stage wait for each other)
    and submits at most ``slots`` runs at once, so a launcher only places and
    watches the runs it is handed. ``cpus_per_run`` is the CPUs (and threads)
    every run gets. The runs folder must be on storage every worker mounts.
    Built by the factory registered with ``register_launchers``, from its
    settings (the ``[launcher]`` table but ``name``) and a
    :class:`LaunchContext`.
    """

    slots: int
    cpus_per_run: int

    def submit(self, job: RunJob) -> LaunchedRun:
        """Start ``job`` (or queue it where the launcher queues) and return its handle."""
        ...

    def close(self) -> None:
        """Release what the launcher holds (a Ray instance it started); called
        once, after every run it started ended, also after a failure."""
        ...

@runtime_checkable
class TaskProtocol(Protocol):
    """What the core asks of a run's task (``[run] task``).

    :class:`modiff.tasks.Task` is its base implementation, and the class a
    ``register_tasks`` plugin subclasses; this protocol is how the layers
    below the tasks (the registry, the assembly, the pipeline) hold one without
    importing them. Its arguments are the core's own objects (a
    :class:`modiff.BuildContext`, the built components, a
    :class:`modiff.Pipeline`, a :class:`modiff.tasks.GenerationRequest`), typed
    ``Any`` here because they live above this module.
    """

    name: str
    description: str
    head: str
    uses_scheduler: bool
    needs_masks: bool
    usage: str
    takes_prompts: bool
    #: :class:`modiff.tasks.Input` and :class:`modiff.tasks.Output` declarations
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]

    @property
    def generates_from_prompts(self) -> bool:
        """Whether prompts alone make images."""
        ...

    def image_context_channels(self, context: Any) -> int:
        """Channels of image context concatenated to ``x_t``."""
        ...

    def training_image_context(self, components: Any, batch: Batch, generator: Any, share: slice) -> Any:
        """The image context of a training batch (``None`` for none)."""
        ...

    def training_loss(
        self, components: Any, *, latents: Any, text: Any, condition_dropout: float, world: Any
    ) -> Callable[..., Any]:
        """The denoiser stage's loss: ``loss(batch, indices, generator) -> scalar``."""
        ...

    def write_samples(self, pipeline: Any, prompts: Sequence[str], path: Any, **kwargs: Any) -> Any:
        """A picture of what the trained run does (``None`` when the task draws none)."""
        ...

    def check(self, components: Any) -> None:
        """Raise a :class:`modiff.ModiffError` if the components cannot do this task."""
        ...

    def generate(self, pipeline: Any, request: Any) -> Any:
        """One generation from its resolved request: a :class:`modiff.tasks.Generated`."""
        ...


# --------------------------------------------------------------------------
# How components learn
# --------------------------------------------------------------------------


@runtime_checkable
class Trainable(Protocol):
    """A component the core trains by gradient descent in a stage of its own
    (an autoencoder, a text encoder trained contrastively).

    ``needs_training`` is False when the component is already trained (loaded
    from ``pretrained`` weights, or restored from a run), so the stage is
    skipped.
    """

    needs_training: bool

    def training_loss(self, batch: Batch, step: TrainingStep) -> Tensor:
        """A scalar loss for ``batch``; the core does backward and the step.

        ``batch`` is this process's share of the step's global batch. Draw
        random numbers with ``step.randn`` and gather batch-wide quantities
        (contrastive negatives) with ``step.gather``, and training on N
        processes equals training on one (see
        :class:`modiff.training.TrainingStep`). A loss that takes only the
        batch still trains, but its draws then differ between processes.
        """
        ...

    def finish_training(self, batches: Iterable[Batch]) -> None:
        """Called once after the stage (e.g. estimate a latent scaling factor)."""
        ...


@runtime_checkable
class Fittable(Protocol):
    """A component fitted on a text corpus without gradients (word2vec)."""

    needs_training: bool

    def fit(self, corpus: Iterable[str]) -> None: ...


@runtime_checkable
class HasAssets(Protocol):
    """A component with state that is not tensors (a vocabulary, a tokenizer,
    a Hugging Face model folder).

    Tensors always travel through ``state_dict()`` into
    ``components/<role>.safetensors``; ``save_assets`` writes everything else
    into a directory of the run that belongs to this component alone, and
    ``load_assets`` reads it back before ``load_state_dict`` is called. Never
    write pickles: use JSON, text, or safetensors.
    """

    def save_assets(self, directory: Path) -> None: ...

    def load_assets(self, directory: Path) -> None: ...


# --------------------------------------------------------------------------
# Optional capabilities: attributes the core reads when a component has them
# --------------------------------------------------------------------------


@runtime_checkable
class TrainsJointly(Protocol):
    """A text embedder that asks to be trained with the denoiser.

    With ``joint_training = True`` the denoiser stage optimises the
    embedder's parameters too, on the task's loss: it is then a
    ``torch.nn.Module`` whose ``embed``, in train mode, passes gradients to
    its parameters, and its embeddings are computed every step. Without the
    attribute, or with ``False``, it is frozen in that stage and each
    caption's embedding is computed once and cached. The value is a ``bool``
    (a string such as ``"false"`` would read as true). The contract kit checks
    both (``TextEmbedderContract``).
    """

    joint_training: bool


@runtime_checkable
class SamplesPosterior(Protocol):
    """An encoder whose ``encode`` samples its posterior (a VAE's q(z | x)).

    With ``sample_posterior = True`` an image's latent is a draw, so the
    denoiser stage encodes every step, handing ``encode`` one generator per
    image (drawn from the step's seed, so N processes draw what one would);
    image ``i``'s latent must depend on its own generator alone. Without the
    attribute, or with ``False``, ``encode`` is a function of the images
    alone, and the core computes each image's latent once and caches it. The
    contract kit checks both (``EncoderContract``).
    """

    sample_posterior: bool


def trains_jointly(component: object) -> bool:
    """Whether ``component`` (a text embedder, or ``None``) is trained with the
    denoiser: the one place the core reads ``joint_training``."""
    return isinstance(component, TrainsJointly) and bool(component.joint_training)


def samples_posterior(encoder: object) -> bool:
    """Whether ``encoder``'s latents are draws that cannot be cached: the one
    place the core reads ``sample_posterior``."""
    return isinstance(encoder, SamplesPosterior) and bool(encoder.sample_posterior)
