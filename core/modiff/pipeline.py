"""A trained pipeline: prompts in, images out.

The CLI's ``generate`` and ``evaluate`` and every evaluator go through
:class:`Pipeline`. Guidance lives in the model function handed to the
sampler, so any sampler of the run's noise schedule can be used without
retraining (:meth:`Pipeline.with_sampler`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from . import progress
from .assembly import Components, DataFacts, build, build_component
from .checkpoint import Checkpoint, load_component
from .devices import autocast, resolve_device
from .errors import ModiffError, RunError, WeightsError
from .files import read_json
from .images import GeneratedImage, ImageLike, image_batch, to_pil
from .noise import generators, randn
from .parameters import DEFAULT_STRENGTH, GenerationParameters, Sampling, model_hash
from .plugins import Registry
from .plugins import registry as default_registry
from .protocols import Conditioning, ModelFn, Scheduler, TaskProtocol
from .runs import RunDir
from .sampler_swap import swap
from .settings import MAX_SEED, ResolvedComponent, ResolvedSettings, load
from .training_plan import stages_to_train, trained_roles

#: Images generated per forward batch unless told otherwise (guidance doubles it).
DEFAULT_BATCH = 64


@dataclass
class Trajectory:
    """What the sampler predicted as the clean image at every step."""

    timesteps: list[float] = field(default_factory=list)
    predictions: list[torch.Tensor] = field(default_factory=list)  # decoded images [B, 3, H, W]


class Pipeline:
    """Components of one run, ready to generate."""

    def __init__(
        self,
        components: Components,
        run: RunDir | None = None,
        *,
        registry: Registry | None = None,
        sampler: tuple[str, Scheduler] | None = None,
    ):
        self.components = components
        self.run = run
        self.registry = registry
        self._model_hash: str | None = None
        trained = components.settings.components.get("scheduler")
        #: the sampler generation uses: ``[sample] scheduler`` if set, else the training scheduler
        self.sampler_name: str = trained.name if trained is not None else ""
        self.scheduler: Scheduler = components.scheduler
        chosen = components.settings.sample.scheduler
        if sampler is not None:
            self.sampler_name, self.scheduler = sampler
        elif chosen and trained is not None and chosen != trained.name:
            self.sampler_name, self.scheduler = chosen, self._sampler(chosen, {})

    # -- construction ----------------------------------------------------

    @classmethod
    def load(
        cls,
        run: str | os.PathLike[str] | RunDir,
        *,
        device: str | torch.device | None = None,
        sets: Sequence[str] = (),
        registry: Registry | None = None,
        with_data: bool = False,
    ) -> Pipeline:
        """Rebuild a trained run from its committed checkpoint: the settings, then
        the weights and assets of every component the run trained. Nothing is
        fitted or trained again (factories see ``context.assets``), and the
        dataset is not built: what the components read from it was saved with
        the run (:class:`~modiff.assembly.DataFacts`), so a run generates after
        its training images are gone. ``with_data`` builds the dataset too, for
        evaluators that read held-out data; so does a run trained before the
        facts were saved."""
        run = run if isinstance(run, RunDir) else RunDir.of(run)
        if device is not None:  # a run's weights need a device that holds data: never "meta"
            device = resolve_device(device, source="--device")
        run.require()
        with run.reading() as checkpoint:  # a trainer still writing the run keeps it until we have read it
            resolved = load([run.settings], sets, registry=registry)
            data = None if with_data else saved_data_facts(run)
            components = build(resolved, device=device, assets=_asset_folders(checkpoint), data=data)
            restore(components, checkpoint)
            pipeline = cls(components, run, registry=registry)
            pipeline._model_hash = weights_hash(checkpoint)  # of the weights just read, whatever a trainer writes next
        return pipeline

    def with_sampler(self, name: str, **overrides: Any) -> Pipeline:
        """The same pipeline sampling with another sampler of the same noise schedule.

        Only the run's noise schedule and prediction type carry over (see
        :mod:`modiff.sampler_swap`); the new sampler's own options (``eta``,
        ``order``, ``use_karras_sigmas``, ...) start at its defaults unless
        ``overrides`` set them.
        """
        other = Pipeline(
            self.components, self.run, registry=self.registry, sampler=(name, self._sampler(name, overrides))
        )
        other._model_hash = self._model_hash  # the same weights
        return other

    def _sampler(self, name: str, overrides: dict[str, Any]) -> Scheduler:
        trained = self.components.settings.components["scheduler"]
        new = (self.registry or default_registry()).lookup("scheduler", name)
        try:
            params = swap(trained.params, new.settings_model, overrides)
        except ModiffError as exc:
            raise ModiffError(f"sampler {name!r} ({new.distribution}): {exc}") from None
        scheduler = build_component(ResolvedComponent("scheduler", new, params), self.components.context)
        if scheduler.prediction_type != self.components.scheduler.prediction_type:
            raise ModiffError(
                f"sampler {name!r} predicts {scheduler.prediction_type!r} but the model was trained with "
                f"{trained.registration.name!r} on {self.components.scheduler.prediction_type!r}"
            )
        return scheduler

    # -- generation ------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.components.device

    @property
    def image_size(self) -> int:
        return self.components.context.image_size

    def conditioning(
        self,
        prompts: Sequence[str],
        image_context: torch.Tensor | None = None,
        negative_prompts: Sequence[str] | None = None,
    ) -> tuple[Conditioning, Conditioning]:
        """The prompts' conditioning and the one guidance pushes away from: the
        negative prompts' where given (as diffusers does), else the null
        conditioning condition dropout trained (the empty prompt)."""
        c = self.components
        if c.conditioner is None:
            return Conditioning(), Conditioning()
        embed = c.text_embedder.embed if c.text_embedder is not None else None
        text = embed(list(prompts)) if embed is not None else None
        cond = c.conditioner.condition(text, image_context=image_context, batch_size=len(prompts))
        if negative_prompts is not None and embed is not None and any(negative_prompts):
            negative = embed(list(negative_prompts))
            return cond, c.conditioner.condition(negative, image_context=image_context, batch_size=len(prompts))
        return cond, c.conditioner.null(len(prompts), like=text, image_context=image_context)

    def model_fn(
        self, cond: Conditioning, null: Conditioning, guidance: float
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The denoiser with conditioning and classifier-free guidance bound.

        With ``[sample] batch_guidance`` (the default) the conditional and
        unconditional halves run as one batch of 2B, one denoiser call per
        step; without it, as two calls of B, which halves the activations'
        peak memory at some cost in speed.
        """
        denoiser = self.components.denoiser
        guided = guidance != 1.0 and self.components.conditioner is not None
        if not guided:
            return lambda x, t: denoiser(x, t, cond)
        if not self.components.settings.sample.batch_guidance:

            def separate(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                c = denoiser(x, t, cond)
                u = denoiser(x, t, null)
                return u + guidance * (c - u)

            return separate
        both = Conditioning.cat([cond, null])

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = denoiser(torch.cat([x, x]), torch.cat([t, t]), both)
            c, u = out.chunk(2)
            return u + guidance * (c - u)

        return fn

    def sampling(
        self,
        *,
        steps: int | None = None,
        guidance: float | None = None,
        negative_prompt: str | None = None,
        strength: float | None = None,
        image_to_image: bool = False,
    ) -> Sampling:
        """The sampling parameters of a generation, every default resolved
        (``[sample]``'s steps and guidance, this pipeline's sampler, the
        image-to-image strength when ``image_to_image``); a :class:`ModiffError`
        for a run whose task does not sample."""
        if self.scheduler is None:
            raise ModiffError(
                f"this run's task ({self.task.name!r}) does not sample: it has no [scheduler]; "
                + self.task.usage.format(run=self.run.path if self.run is not None else "RUN")
            )
        sample = self.components.settings.sample
        if strength is not None and not image_to_image:
            raise ModiffError("a strength needs an image to start from (image-to-image)")
        return Sampling(
            steps=sample.steps if steps is None else steps,
            guidance=sample.guidance if guidance is None else guidance,
            sampler=self.sampler_name,
            negative_prompt=negative_prompt or "",
            strength=(DEFAULT_STRENGTH if strength is None else float(strength)) if image_to_image else None,
        )

    def check_request(self, *, seed: int, count: int, steps: int, guidance: float) -> None:
        """A :class:`ModiffError` naming the value for a request no sampler can honour."""
        last = seed + max(count, 1) - 1
        if seed < 0 or last > MAX_SEED:
            raise ModiffError(
                f"seed {seed} gives seeds {seed}..{last}; seeds must lie in 0..{MAX_SEED} (a 64-bit generator's range)"
            )
        limit = int(self.scheduler.num_train_timesteps)
        if not 1 <= steps <= limit:
            raise ModiffError(f"steps = {steps}: the noise schedule has {limit} timesteps; use 1 to {limit} steps")
        if not math.isfinite(guidance):
            raise ModiffError(f"guidance = {guidance} is not a number; use a finite scale such as 3.0 (1 disables it)")
        if guidance < 0:
            raise ModiffError(f"guidance = {guidance}: use a scale of at least 0 such as 3.0 (1 disables guidance)")

    @torch.inference_mode()
    def generate_latents(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        init_images: torch.Tensor | None = None,
        strength: float | None = None,
        image_context: torch.Tensor | None = None,
        trajectory: Trajectory | None = None,
        wrap_model: Callable[[ModelFn], ModelFn] | None = None,
        on_step: Callable[[], Any] | None = None,
    ) -> torch.Tensor:
        """Sample latents for ``prompts``.

        Args:
            seed, seeds: sample ``i`` is drawn from a generator seeded with
                ``seeds[i]`` (default ``seed + i``) alone, so it does not depend
                on the rest of the batch.
            steps, guidance: default ``[sample]``'s.
            negative_prompt: one text, or one per prompt, for guidance to push
                away from (the unconditional branch); default the empty prompt.
            init_images: ``[B, 3, H, W]`` in [-1, 1] for image-to-image: each is
                encoded, noised to the level ``strength`` sets (1: pure noise, 0:
                the image itself) and denoised from there, with any sampler.
            image_context: the task's context (a class map, a masked latent).
            trajectory: filled with the predicted clean image at every step.
            wrap_model: wraps the model function (training-free inpainting).
            on_step: called after every sampler step (a progress bar's update).
        """
        c = self.components
        resolved = self.sampling(steps=steps, guidance=guidance)
        steps, guidance = resolved.steps, resolved.guidance
        n = len(prompts)
        seeds = [seed + i for i in range(n)] if seeds is None else [int(s) for s in seeds]
        if len(seeds) != n:
            raise ModiffError(f"got {len(seeds)} seeds for {n} prompts; give one seed per prompt")
        for s in seeds:
            self.check_request(seed=s, count=1, steps=steps, guidance=guidance)
        negatives = _per_prompt(negative_prompt, n, "negative prompts")
        size = c.context.latent_size
        shape = (n, c.context.latent_channels, size, size)
        gens = generators(seeds)
        noise = randn(shape, gens, device=self.device)
        with autocast(self.device, c.settings.run.precision):
            start = 0
            if init_images is not None:
                start, noise = self._image_to_image_start(init_images, strength, steps, noise)
                if start >= steps:  # strength 0: nothing to denoise
                    return noise.float()
            cond, uncond = self.conditioning(prompts, image_context, negatives)
            fn = self.model_fn(cond, uncond, guidance)
            if wrap_model is not None:
                fn = wrap_model(fn)
            callback = None
            if trajectory is not None or on_step is not None:

                def callback(i: int, t: torch.Tensor, x: torch.Tensor, x0: torch.Tensor) -> None:
                    if trajectory is not None:
                        trajectory.timesteps.append(float(t.float().mean()) if torch.is_tensor(t) else float(t))
                        trajectory.predictions.append(c.encoder.decode(x0.float()).cpu())
                    if on_step is not None:
                        on_step()

            latents = self.scheduler.sample(fn, noise, steps, generator=gens, callback=callback, start_step=start)
        return latents.float()

    def _image_to_image_start(
        self, images: torch.Tensor, strength: float | None, steps: int, noise: torch.Tensor
    ) -> tuple[int, torch.Tensor]:
        """Where image-to-image starts: the step ``strength`` sets (diffusers' rule:
        the last ``int(steps * strength)`` steps are run) and the encoded images
        noised to that step's level with the samples' own noise."""
        strength = DEFAULT_STRENGTH if strength is None else float(strength)
        if not 0.0 <= strength <= 1.0:
            raise ModiffError(f"strength = {strength}: use a value from 0 (keep the image) to 1 (pure noise)")
        if images.shape[0] != noise.shape[0]:
            raise ModiffError(f"got {images.shape[0]} init images for {noise.shape[0]} prompts")
        start = steps - min(int(steps * strength), steps)
        latents = self.components.encoder.encode(images.to(self.device, torch.float32)).float()
        if start >= steps:
            return start, latents
        level = self.scheduler.timesteps(steps)[start]
        t = torch.as_tensor(level, device=self.device).float().expand(latents.shape[0])
        return start, self.scheduler.add_noise(latents, noise.to(latents), t)

    @torch.inference_mode()
    def generate_tensor(self, prompts: Sequence[str], *, batch_size: int | None = None, **kwargs: Any) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] (not clamped), generated ``batch_size``
        at a time; the options of :meth:`generate_latents`."""
        prompts = list(prompts)
        batch_size = batch_size or min(len(prompts), DEFAULT_BATCH) or 1
        seed = int(kwargs.pop("seed", 0))
        seeds = list(kwargs.pop("seeds", None) or [seed + i for i in range(len(prompts))])
        negatives = _per_prompt(kwargs.pop("negative_prompt", None), len(prompts), "negative prompts")
        init_images = kwargs.pop("init_images", None)
        out = []
        steps = self.sampling(steps=kwargs.get("steps")).steps
        batches = math.ceil(len(prompts) / batch_size)
        bar = progress.bar(total=batches * steps, unit="step")  # the time left, over all batches
        try:
            for k, start in enumerate(range(0, len(prompts), batch_size)):
                part = slice(start, start + batch_size)
                latents = self.generate_latents(
                    prompts[part],
                    seeds=seeds[part],
                    negative_prompt=negatives[part] if negatives is not None else None,
                    init_images=init_images[part] if init_images is not None else None,
                    on_step=bar.update,
                    **kwargs,
                )
                out.append(self.decode(latents))
                bar.update((k + 1) * steps - bar.n)  # image-to-image runs fewer steps than a batch's share
                bar.set_postfix_str(f"{min(start + batch_size, len(prompts))}/{len(prompts)} images")
        finally:
            bar.close()
        return torch.cat(out) if out else torch.empty(0, 3, self.image_size, self.image_size)

    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        init_images: ImageLike | Sequence[ImageLike] | None = None,
        strength: float | None = None,
        **kwargs: Any,
    ) -> list[GeneratedImage]:
        """RGB PIL images for ``prompts`` (one text, or a list of them), each
        carrying the parameters it was made with (``image.parameters``, and
        ``image.info["parameters"]``), which ``image.save("x.png")`` writes as
        the PNG's ``parameters`` chunk.

        Args:
            seed, seeds, steps, guidance, negative_prompt: as
                :meth:`generate_latents`.
            init_images: image-to-image: a PIL image or a tensor ``[3, H, W]``
                in [-1, 1] for every prompt, or one per prompt (a list, or
                ``[B, 3, H, W]``); ``strength`` says how far from it to go.
            kwargs: the other options of :meth:`generate_tensor` (``batch_size``, ...).

        A task's other inputs (a region to repaint, a class map to follow) go
        through the task: ``modiff.tasks.generate(pipe, "a red circle",
        image=start, mask=region)`` takes them as PIL images or tensors too.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        n, size = len(prompts), self.image_size
        seeds = [seed + i for i in range(n)] if seeds is None else [int(s) for s in seeds]
        starts = None if init_images is None else image_batch(init_images, n, size, "init_images")
        sampling = self.sampling(
            steps=steps, guidance=guidance, strength=strength, image_to_image=starts is not None,
            negative_prompt=negative_prompt if isinstance(negative_prompt, str) else None,
        )
        options = {**sampling.options(), "negative_prompt": negative_prompt, "seeds": seeds, **kwargs}
        tensor = self.generate_tensor(prompts, init_images=starts, **options)
        negatives = _per_prompt(negative_prompt, n, "negative prompts") or [""] * n
        model = self.model_hash
        run = str(self.run.path.resolve()) if self.run is not None else ""
        return [
            GeneratedImage.of(image, GenerationParameters(
                prompt=prompt, seed=s, steps=sampling.steps, guidance=sampling.guidance, sampler=sampling.sampler,
                width=size, height=size, run=run, model_hash=model, negative_prompt=negative,
                strength=sampling.strength,
            ))
            for image, prompt, s, negative in zip(to_pil(tensor), prompts, seeds, negatives)
        ]

    @property
    def model_hash(self) -> str:
        """:func:`modiff.parameters.model_hash` of the weights :meth:`load` read;
        empty for a pipeline built from components in memory (one training
        samples with), whose weights no file holds yet."""
        return self._model_hash or ""

    @property
    def task(self) -> TaskProtocol:
        """The run's :class:`modiff.tasks.Task`: what a generation takes and
        returns (its ``generate``), and its own operations, such as
        :func:`modiff.tasks.segment`, which take the pipeline."""
        return self.components.task

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images ``[B, 3, H, W]`` in [-1, 1] (not clamped), on the CPU."""
        with autocast(self.device, self.components.settings.run.precision):
            return self.components.encoder.decode(latents).float().cpu()

    def trajectory(self, prompts: Sequence[str], **kwargs: Any) -> tuple[list[Image.Image], Trajectory]:
        """Final images plus the predicted clean image at every step."""
        traj = Trajectory()
        final = self.generate(prompts, trajectory=traj, **kwargs)
        return final, traj


def _per_prompt(value: str | Sequence[str] | None, n: int, what: str) -> list[str] | None:
    """One string for every prompt (a single string is repeated)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ModiffError(f"got {len(values)} {what} for {n} prompts; give one, or one per prompt")
    return values


def restore(components: Components, checkpoint: Checkpoint) -> None:
    """Load every component ``checkpoint`` holds into ``components``; a component
    the run trained but the checkpoint lacks is a :class:`WeightsError`."""
    settings: ResolvedSettings = components.settings
    if "denoiser" not in checkpoint.roles:
        raise RunError(
            f"{checkpoint.path.parent.parent} has no trained denoiser yet; finish training with "
            f"`modiff train {checkpoint.path.parent.parent} --resume`"
        )
    done = set(checkpoint.stages_done) | {checkpoint.stage} if checkpoint.stage else set(checkpoint.stages_done)
    expected = trained_roles(components, [s for s in stages_to_train(components) if s in done or s == "denoiser"])
    for role in expected:
        if role not in checkpoint.roles or not checkpoint.weights(role).is_file():
            raise WeightsError(
                f"{checkpoint.weights(role)} is missing: the run trained its {role}, and without those weights "
                "it would generate with an untrained one. Restore the file, or train the run again."
            )
    for role, module in components.modules():
        if role in checkpoint.roles:
            load_component(checkpoint, role, module, settings.components[role].registration)
            if hasattr(module, "needs_training"):
                module.needs_training = False  # it is trained: the run's checkpoint holds it
            module.eval()


def weights_hash(checkpoint: Checkpoint) -> str:
    """:func:`modiff.parameters.model_hash` of ``checkpoint``'s weights files."""
    return model_hash([checkpoint.weights(role) for role in checkpoint.roles if checkpoint.weights(role).is_file()])


def saved_data_facts(run: RunDir) -> DataFacts | None:
    """What training saved about the run's dataset; ``None`` for a run trained
    before it was saved (its dataset is then built, as it was then)."""
    path = run.data_facts
    return DataFacts.from_json(read_json(path, "what the run read from its dataset")) if path.is_file() else None


def _asset_folders(checkpoint: Checkpoint) -> dict[str, Path]:
    """The saved assets of each component of ``checkpoint``, for factories that
    would otherwise fit them (a tokenizer trained on the captions)."""
    return {role: checkpoint.assets(role) for role in checkpoint.roles if checkpoint.assets(role).is_dir()}
