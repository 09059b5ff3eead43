"""A trained pipeline: prompts in, images out.

The CLI's ``generate`` and ``evaluate`` and every evaluator go through
:class:`Pipeline`. Guidance lives in the model function handed to the
sampler, so any sampler of the run's noise schedule can be used without
retraining (:meth:`Pipeline.with_sampler`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .assembly import Components, build, build_component
from .devices import autocast
from .errors import ModiffError, RunError
from .images import to_pil
from .noise import generators, randn
from .plugins import Registry
from .plugins import registry as default_registry
from .protocols import Conditioning, Scheduler
from .runs import RunDir, load_component
from .settings import ResolvedComponent, ResolvedSettings, load


#: Images generated per forward batch unless told otherwise (guidance doubles it).
DEFAULT_BATCH = 64


@dataclass
class Trajectory:
    """What the sampler predicted as the clean image at every step."""

    timesteps: list[float] = field(default_factory=list)
    predictions: list[torch.Tensor] = field(default_factory=list)  # decoded images [B, 3, H, W]


class Pipeline:
    """Components of one run, ready to generate."""

    def __init__(self, components: Components, run: RunDir | None = None):
        self.components = components
        self.run = run
        self.scheduler: Scheduler = components.scheduler

    # -- construction ----------------------------------------------------

    @classmethod
    def load(
        cls,
        run: str | os.PathLike[str] | RunDir,
        *,
        device: str | torch.device | None = None,
        sets: Sequence[str] = (),
        registry: Registry | None = None,
    ) -> Pipeline:
        """Rebuild a trained run from its directory (settings, then weights)."""
        run = run if isinstance(run, RunDir) else RunDir.of(run)
        run.require()
        resolved = load([run.settings], sets, registry=registry)
        components = build(resolved, device=device)
        restore(components, run)
        if not run.weights("denoiser").is_file():
            raise RunError(
                f"{run.path} has no trained denoiser yet; finish training with "
                f"`modiff train {run.settings} --resume`"
            )
        return cls(components, run)

    def with_sampler(self, name: str, **overrides: Any) -> Pipeline:
        """The same pipeline sampling with another sampler of the same noise schedule.

        Only the run's noise schedule and prediction type carry over (see
        :mod:`modiff.sampler_swap`); the new sampler's own options (``eta``,
        ``order``, ``use_karras_sigmas``, ...) start at its defaults unless
        ``overrides`` set them.
        """
        from .sampler_swap import swap

        trained = self.components.settings.components["scheduler"]
        new = default_registry().lookup("scheduler", name)
        try:
            params = swap(trained.params, new.settings_model, overrides)
        except ModiffError as exc:
            raise ModiffError(f"sampler {name!r} ({new.distribution}): {exc}") from None
        scheduler = build_component(ResolvedComponent("scheduler", new, params), self.components.context)
        if scheduler.prediction_type != self.scheduler.prediction_type:
            raise ModiffError(
                f"sampler {name!r} predicts {scheduler.prediction_type!r} but the model was trained with "
                f"{trained.registration.name!r} on {self.scheduler.prediction_type!r}"
            )
        other = Pipeline(self.components, self.run)
        other.scheduler = scheduler
        return other

    # -- generation ------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.components.device

    @property
    def image_size(self) -> int:
        return self.components.context.image_size

    def conditioning(self, prompts: Sequence[str], image_context: torch.Tensor | None = None) -> tuple[Conditioning, Conditioning]:
        """The prompts' conditioning and the matching null conditioning."""
        c = self.components
        if c.conditioner is None:
            return Conditioning(), Conditioning()
        text = c.text_embedder.embed(list(prompts)) if c.text_embedder is not None else None
        cond = c.conditioner.condition(text, image_context=image_context, batch_size=len(prompts))
        null = c.conditioner.null(len(prompts), like=text, image_context=image_context)
        return cond, null

    def model_fn(self, cond: Conditioning, null: Conditioning, guidance: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
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

    @torch.inference_mode()
    def generate_latents(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        image_context: torch.Tensor | None = None,
        trajectory: Trajectory | None = None,
        init: tuple[torch.Tensor, int] | None = None,
        wrap_model: Callable[[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Sample latents for ``prompts``; sample ``i`` is seeded with ``seed + i``
        alone, so it does not depend on the rest of the batch."""
        c = self.components
        sample = c.settings.sample
        steps = steps or sample.steps
        guidance = sample.guidance if guidance is None else guidance
        n = len(prompts)
        size = c.context.latent_size
        shape = (n, c.context.latent_channels, size, size)
        gens = generators([seed + i for i in range(n)])
        noise = randn(shape, gens, device=self.device)
        with autocast(self.device, c.settings.run.precision):
            cond, null = self.conditioning(prompts, image_context)
            fn = self.model_fn(cond, null, guidance)
            if wrap_model is not None:
                fn = wrap_model(fn)
            callback = None
            if trajectory is not None:

                def callback(i: int, t: torch.Tensor, x: torch.Tensor, x0: torch.Tensor) -> None:
                    trajectory.timesteps.append(float(t.float().mean()) if torch.is_tensor(t) else float(t))
                    trajectory.predictions.append(c.encoder.decode(x0.float()).cpu())

            start = 0
            if init is not None:
                noise, start = init
            latents = self.scheduler.sample(fn, noise, steps, generator=gens, callback=callback, start_step=start)
        return latents.float()

    @torch.inference_mode()
    def generate_tensor(self, prompts: Sequence[str], *, batch_size: int | None = None, **kwargs: Any) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] (not clamped)."""
        batch_size = batch_size or min(len(prompts), DEFAULT_BATCH) or 1
        seed = int(kwargs.pop("seed", 0))
        out = []
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            latents = self.generate_latents(chunk, seed=seed + start, **kwargs)
            with autocast(self.device, self.components.settings.run.precision):
                out.append(self.components.encoder.decode(latents).float().cpu())
        return torch.cat(out) if out else torch.empty(0, 3, self.image_size, self.image_size)

    def generate(self, prompts: Sequence[str], **kwargs: Any) -> list[Image.Image]:
        """RGB PIL images for ``prompts`` (see :meth:`generate_latents` for the options)."""
        return to_pil(self.generate_tensor(list(prompts), **kwargs))

    # -- the other tasks -------------------------------------------------

    @property
    def task(self) -> str:
        return self.components.settings.run.task

    @torch.inference_mode()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Class maps ``[B, H, W]`` for images ``[B, 3, H, W]`` (a ``segmentation`` run)."""
        if self.task != "segmentation":
            raise ModiffError(f"this run's task is {self.task!r}; segmentation needs a run trained with task = \"segmentation\"")
        c = self.components
        images = images.to(self.device)
        with autocast(self.device, c.settings.run.precision):
            x = c.encoder.encode(images)
            cond = c.conditioner.condition(None, batch_size=len(images)) if c.conditioner is not None else Conditioning()
            logits = c.denoiser(x, torch.zeros(len(images), device=self.device), cond).float()
        if logits.shape[-2:] != images.shape[-2:]:
            logits = torch.nn.functional.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(1).cpu()

    def mask_to_image(self, prompts: Sequence[str], masks: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` whose layout follows class maps ``masks [B, H, W]``
        (a ``mask-to-image`` run); prompts may be empty strings."""
        from .tasks import mask_context

        if self.task != "mask-to-image":
            raise ModiffError(f"this run's task is {self.task!r}; --mask needs a run trained with task = \"mask-to-image\"")
        ctx = mask_context(masks, self.components.context.num_classes, self.components.context.latent_size)
        return self._decode(self.generate_latents(list(prompts), image_context=ctx.to(self.device), **kwargs))

    def inpaint(
        self, prompts: Sequence[str], images: torch.Tensor, paint: torch.Tensor, *, method: str = "auto", **kwargs: Any
    ) -> torch.Tensor:
        """Repaint the region ``paint`` (``[B, 1, H, W]`` or ``[B, H, W]``, 1 =
        new content) of ``images`` following ``prompts``; pixels outside it are
        returned unchanged.

        ``method = "trained"`` uses a run trained with ``task = "inpainting"``
        (mask and masked-image latent as context); ``"training-free"`` works
        with any text-to-image run by replacing the known region with the
        noised original at every step. ``"auto"`` picks by the run's task.
        """
        from .tasks import blend_known, inpainting_context

        c = self.components
        if paint.dim() == 3:
            paint = paint[:, None]
        images, paint = images.to(self.device).float(), paint.to(self.device).float()
        size = c.context.latent_size
        if method == "auto":
            method = "trained" if self.task == "inpainting" else "training-free"
        if method == "trained":
            if self.task != "inpainting":
                raise ModiffError(f"this run's task is {self.task!r}; trained inpainting needs task = \"inpainting\"")
            with torch.inference_mode():
                ctx = inpainting_context(c.encoder, images, paint, size)
            latents = self.generate_latents(list(prompts), image_context=ctx, **kwargs)
        elif method == "training-free":
            with torch.inference_mode():
                known = c.encoder.encode(images)
                keep = 1 - torch.nn.functional.adaptive_max_pool2d(paint, size)
                seed = int(kwargs.get("seed", 0))
                noise = randn(known.shape, generators([seed + 10_000 + i for i in range(len(images))]), device=self.device)
            latents = self.generate_latents(list(prompts), wrap_model=blend_known(self.scheduler, known, keep, noise), **kwargs)
            latents = keep * known + (1 - keep) * latents
        else:
            raise ModiffError(f"inpainting method {method!r} is unknown; use auto, trained or training-free")
        painted = self._decode(latents).to(self.device)
        return (paint * painted + (1 - paint) * images).cpu()

    @torch.inference_mode()
    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.components.settings.run.precision):
            return self.components.encoder.decode(latents).float().cpu()

    def trajectory(self, prompts: Sequence[str], **kwargs: Any) -> tuple[list[Image.Image], Trajectory]:
        """Final images plus the predicted clean image at every step."""
        traj = Trajectory()
        final = self.generate(prompts, trajectory=traj, **kwargs)
        return final, traj


def restore(components: Components, run: RunDir) -> None:
    """Load every saved component of ``run`` into ``components``."""
    settings: ResolvedSettings = components.settings
    for role, module in components.modules():
        if run.weights(role).is_file():
            load_component(run, role, module, settings.components[role].registration)
            if hasattr(module, "needs_training"):
                module.needs_training = False
            module.eval()
