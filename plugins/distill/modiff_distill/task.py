"""Latent consistency distillation (Luo et al. 2023) as a task.

Each step: a timestep ``t`` of the skipping schedule and a guidance scale
``w`` are drawn per sample; the frozen teacher takes one guided DDIM step
from ``x_t`` to ``t - k``; the student's consistency function at ``(x_t, t)``
is pulled towards the target network's at ``(x_{t-k}, t - k)``. The target
network is an EMA of the student. The boundary condition (``c_skip``,
``c_out``) is the ``lcm`` sampler's, so the student is sampled with it.

With ``[conditioner] segments = N`` the consistency is multistep (Heek et
al. 2024): the schedule is cut into ``N`` segments and the student's output
at ``(x_t, t)`` is where a deterministic DDIM step with its prediction lands
at the lower end of ``t``'s segment (the clean sample in the lowest); on a
segment's end the teacher's step itself is the target. No boundary scaling:
the student is an ordinary denoiser sampled with ``ddim`` (trailing spacing)
at ``N`` steps, which visits exactly the segments' ends. Latent consistency
maps every ``t`` to the clean sample and sampling adds noise back between
steps; the multistep student needs none, at the price of a step count fixed
at training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

import modiff
from modiff.protocols import Batch, TextEmbedding
from modiff.tasks import Generated, GenerationRequest, Task

from .conditioner import GuidanceConditioner
from .student import ConsistencyStudent
from .teacher import load_teacher


def consistency_scalings(t: Tensor, timestep_scaling: float, sigma_data: float = 0.5) -> tuple[Tensor, Tensor]:
    """``(c_skip, c_out)`` at timesteps ``t`` ``[B]``, shaped ``[B, 1, 1, 1]``: the lcm sampler's boundary condition."""
    scaled = t.double() * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2).sqrt()
    return c_skip.float().view(-1, 1, 1, 1), c_out.float().view(-1, 1, 1, 1)


def segment_ends(j: Tensor, original_inference_steps: int, segments: int) -> Tensor:
    """The point (in ``0..original_inference_steps``) at the lower end of the segment that holds
    each point ``j`` (``1..original_inference_steps``), the schedule cut into ``segments`` equal
    ones; 0 is the clean sample. A point on a segment's lower end belongs to the segment below."""
    width = original_inference_steps // segments
    return (j - 1) // width * width


def ddim_to(x0: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """Where a deterministic DDIM step with ``(x0, eps)`` lands at signal/noise ``(a, s)``."""
    return a * x0 + s * eps


def jump(x0: Tensor, eps: Tensor, a: Tensor, s: Tensor, end: Tensor) -> Tensor:
    """:func:`ddim_to`, or ``x0`` itself where ``end`` (``[B]``, bool) says the segment ends at
    the clean sample."""
    return torch.where(end.view(-1, 1, 1, 1), x0, ddim_to(x0, eps, a, s))


def signal_and_noise(scheduler: Any, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """``sqrt(alpha_bar_t)`` and ``sqrt(1 - alpha_bar_t)`` ``[B, 1, 1, 1]``, read from the scheduler's ``add_noise``."""
    ones, zeros = torch.ones_like(like), torch.zeros_like(like)
    return scheduler.add_noise(ones, zeros, t)[:, :1, :1, :1], scheduler.add_noise(zeros, ones, t)[:, :1, :1, :1]


def x0_and_eps(prediction_type: str, out: Tensor, x: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """The clean sample and the noise a denoiser's output means, for its prediction type."""
    if prediction_type == "v_prediction":
        return a * x - s * out, s * x + a * out
    if prediction_type == "epsilon":
        return (x - s * out) / a.clamp(min=1e-4), out
    if prediction_type == "sample":
        return out, (x - a * out) / s.clamp(min=1e-4)
    raise modiff.ModiffError(f"consistency distillation does not know prediction_type {prediction_type!r}")


class ConsistencyLoss:
    """One distillation step's loss (see the module's doc). Random draws are made
    for the global batch from the step's generator and sliced to this rank's share."""

    def __init__(self, components: Any, latents: Callable[..., Tensor], text: Callable[..., TextEmbedding] | None,
                 world: Any, teacher: Any):
        self.components, self.latents, self.text, self.world = components, latents, text, world
        self.teacher_denoiser = teacher.components.denoiser
        self.conditioner: GuidanceConditioner = components.conditioner
        self.settings = self.conditioner.settings

    def _update_target(self) -> dict[str, Tensor]:
        """The target's weights after this step's EMA update towards the student
        (updated before the step's loss: after the previous step's optimizer update)."""
        target = self.components.denoiser.target
        decay = self.settings.target_ema
        with torch.no_grad():
            student = self.components.denoiser.student_weights()
            for name, value in target.named_buffers():
                mine = student[name.replace(":", ".")]
                if value.is_floating_point():
                    value.lerp_(mine.to(value.dtype), 1.0 - decay)
                else:
                    value.copy_(mine)
        return target.weights()

    def _guided(self, x: Tensor, t: Tensor, text: TextEmbedding | None, w: Tensor) -> tuple[Tensor, Tensor]:
        """The teacher's guided clean sample and noise at ``(x, t)``: both halves in one call."""
        scheduler, b, base = self.components.scheduler, x.shape[0], self.conditioner.base
        conditioned = base.condition(text, batch_size=b)
        both = type(conditioned).cat([conditioned, base.null(b, like=text)])
        a, s = signal_and_noise(scheduler, t, x)
        out = self.teacher_denoiser(torch.cat([x, x]), torch.cat([t, t]).float(), both).float()
        x0, eps = x0_and_eps(scheduler.prediction_type, out, torch.cat([x, x]), torch.cat([a, a]), torch.cat([s, s]))
        (x0_c, x0_u), (eps_c, eps_u) = x0.chunk(2), eps.chunk(2)
        ww = w.view(-1, 1, 1, 1)
        return x0_u + ww * (x0_c - x0_u), eps_u + ww * (eps_c - eps_u)

    def _on_teacher_path(self, x_top: Tensor, j: Tensor, k: int, text: TextEmbedding | None, w: Tensor) -> Tensor:
        """Each sample at its point ``j``, reached by the teacher's guided DDIM steps of ``k`` from
        ``x_top`` at the top point: the inputs a few-step sampler gives the student, which the
        data noised to ``t`` are not (a coarse step's result is blurrier than the marginal at ``t``)."""
        scheduler, x = self.components.scheduler, x_top
        moving_to = j.to(x.device)
        for point in range(self.settings.original_inference_steps, 1, -1):  # from point to point - 1
            t = torch.full((x.shape[0],), point * k - 1, device=x.device)
            x0, eps = self._guided(x, t, text, w)
            a, s = signal_and_noise(scheduler, t - k, x)
            x = torch.where((moving_to < point).view(-1, 1, 1, 1), ddim_to(x0, eps, a, s), x)
        return x

    def __call__(self, batch: Batch, indices: Sequence[int], g: torch.Generator) -> Tensor:
        c, s, world = self.components, self.settings, self.world
        scheduler, device = c.scheduler, c.device
        target_weights = self._update_target()
        step = modiff.TrainingStep(g, world.rank, world.size)
        x0 = self.latents(batch.images, indices, step)
        b, share, n = x0.shape[0], slice(world.rank, None, world.size), x0.shape[0] * world.size
        k = scheduler.num_train_timesteps // s.original_inference_steps
        j = torch.randint(1, s.original_inference_steps + 1, (n,), generator=g)[share]
        t = (j * k - 1).to(device)
        t_prev = (t - k).clamp(min=0)
        low, high = s.guidance_range
        w = (low + (high - low) * torch.rand(n, generator=g)[share]).to(device)
        noise = modiff.randn((n, *x0.shape[1:]), g, dtype=x0.dtype)[share].to(device)
        x_t = scheduler.add_noise(x0, noise, t)
        text = self.text(batch.captions, indices) if self.text is not None else None
        cond = self.conditioner.condition(text, batch_size=b, guidance=w)
        if s.teacher_path:
            with torch.no_grad():
                top = torch.full_like(t, s.original_inference_steps * k - 1)
                x_t = self._on_teacher_path(scheduler.add_noise(x0, noise, top), j, k, text, w)

        a_t, s_t = signal_and_noise(scheduler, t, x0)
        pred = c.denoiser(x_t, t.float(), cond)
        student_x0, student_eps = x0_and_eps(scheduler.prediction_type, pred.float(), x_t, a_t, s_t)
        if s.segments:  # multistep consistency: the student's DDIM jump to its segment's lower end
            ends = segment_ends(j, s.original_inference_steps, s.segments)
            clean, at_end = (ends == 0).to(device), (j - 1 == ends).to(device)
            a_e, s_e = signal_and_noise(scheduler, (ends * k - 1).clamp(min=0).to(device), x0)
            student = jump(student_x0, student_eps, a_e, s_e, clean)
        else:
            skip, out = consistency_scalings(t, s.timestep_scaling)
            student = skip * x_t + out * student_x0

        with torch.no_grad():
            guided_x0, guided_eps = self._guided(x_t, t, text, w)
            a_p, s_p = signal_and_noise(scheduler, t_prev, x0)
            x_prev = ddim_to(guided_x0, guided_eps, a_p, s_p)  # t -> t - k
            target_pred = functional_call(c.denoiser, target_weights, (x_prev, t_prev.float(), cond)).float()
            target_x0, target_eps = x0_and_eps(scheduler.prediction_type, target_pred, x_prev, a_p, s_p)
            if s.segments:  # at the segment's end the teacher's step is the target itself; at the
                # bottom it lands on the clean sample, as ddim's last step does (not on t = 0's noise)
                teacher_end = torch.where(clean.view(-1, 1, 1, 1), guided_x0, x_prev)
                target = torch.where(at_end.view(-1, 1, 1, 1), teacher_end,
                                     jump(target_x0, target_eps, a_e, s_e, clean))
            else:
                skip_p, out_p = consistency_scalings(t_prev, s.timestep_scaling)
                target = skip_p * x_prev + out_p * target_x0

        diff = (student - target).flatten(1)
        if s.loss == "l2":
            return diff.pow(2).mean()
        return ((diff.pow(2) + s.huber_c**2).sqrt() - s.huber_c).mean()


class ConsistencyDistillation(Task):
    """A few-step student of a trained run, with guidance folded in: sample it with
    the ``lcm`` sampler (``ddim`` at its segments' count for a multistep student); a
    generation's guidance scale is the student's ``w``."""

    name = "consistency-distillation"
    description = "a few-step student distilled from a trained run (latent consistency distillation)"
    usage = 'generate images in its [sample] steps, one call each, with `modiff generate {run} "a prompt"`'

    def check(self, components: Any) -> None:
        super().check(components)
        if not isinstance(components.conditioner, GuidanceConditioner):
            raise modiff.SettingsError(
                ['[run] task = "consistency-distillation" needs [conditioner] plugin = "consistency" '
                 "(it names the teacher and carries the guidance scale)"]
            )
        if not isinstance(components.denoiser, ConsistencyStudent):
            raise modiff.SettingsError(
                ['[run] task = "consistency-distillation" needs [denoiser] plugin = "consistency-student" '
                 "(the teacher's denoiser, copied)"]
            )
        folders = {role: Path(components.settings.components[role].params.teacher).resolve()
                   for role in ("encoder", "text_embedder", "conditioner", "denoiser")
                   if hasattr(components.settings.components[role].params, "teacher")}
        if len(set(folders.values())) != 1:
            named = ", ".join(f"[{role}] teacher = {str(path)!r}" for role, path in folders.items())
            raise modiff.SettingsError([f"the teacher must be one run: {named}"])

    def training_loss(self, components: Any, *, latents: Any, text: Any, condition_dropout: float,
                      world: Any) -> ConsistencyLoss:
        """The distillation loss (the student starts as the teacher: see :mod:`.student`)."""
        self.check(components)
        teacher = load_teacher(components.conditioner.settings.teacher, "[conditioner] teacher", components.device)
        return ConsistencyLoss(components, latents, text, world, teacher)

    def generate(self, pipeline: Any, request: GenerationRequest) -> Generated:
        """One call of the student per step: a guidance scale other than 1 becomes ``w``
        (1, the run's default, keeps ``[conditioner] guidance``)."""
        sampling = self._sampling(request)
        conditioner = pipeline.components.conditioner
        default = conditioner.guidance
        if sampling.guidance != 1.0:
            conditioner.guidance = sampling.guidance
        try:
            options = {**sampling.options(), "guidance": 1.0}
            images = pipeline.generate_tensor(list(request.prompts), seeds=list(request.seeds), **options)
        finally:
            conditioner.guidance = default
        return Generated({"images": images}, sampling)
