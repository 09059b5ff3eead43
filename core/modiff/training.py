"""The training loop the core owns, for every stage of a run.

``modiff train`` runs the stages a run needs, in order:

1. ``encoder`` — an autoencoder that still needs training (``Trainable``).
2. ``text_embedder`` — fitted on the caption corpus (``Fittable``) or trained
   on image–caption pairs (``Trainable``).
3. ``denoiser`` — the denoiser and conditioner (and a text embedder that asks
   for ``joint_training``) on the task's loss, the others frozen.

Every stage shares one loop: AdamW with warm-up and cosine decay, gradient
clipping, mixed precision, EMA weights (denoiser stage), atomic checkpoints,
resume, metrics, a progress bar, and Ctrl-C that saves before it exits.

Determinism: the batch at step ``s`` and every random draw of that step are
pure functions of ``(seed, stage, s)``, so a resumed run sees exactly the
data and noise an uninterrupted one would, and distributed ranks take
disjoint shares of the same global batch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .assembly import Components
from .devices import autocast
from .distributed import World
from .errors import ModiffError
from .noise import randn
from .protocols import Batch, Conditioning, Fittable, TextEmbedding, Trainable
from .runs import RunDir, atomic_save_tensors, atomic_write_json, read_tensors, save_component
from .settings import StageSettings
from .tasks import SegmentationLoss, training_image_context

MAX_SEED = 2**63 - 1


class TrainingInterrupted(ModiffError):
    """Ctrl-C during training; the checkpoint is saved and the run can resume."""

    exit_code = 130


class NonFiniteLoss(ModiffError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def step_seed(seed: int, stage: str, step: int) -> int:
    """A seed for everything random at ``step`` of ``stage``, independent of history."""
    h = 1469598103934665603
    for part in (str(seed), stage, str(step)):
        for ch in part.encode():
            h = ((h ^ ch) * 1099511628211) % 2**64
        h = ((h ^ 0xFF) * 1099511628211) % 2**64
    return h % MAX_SEED


def batch_indices(seed: int, stage: str, step: int, batch_size: int, size: int, world: World) -> list[int]:
    """This rank's share of the global batch at ``step``: a slice of a seeded
    permutation of the dataset, one permutation per epoch."""
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), size)
        g = torch.Generator().manual_seed(step_seed(seed, f"{stage}/epoch", epoch))
        perm = torch.randperm(size, generator=g)
        take = min(batch_size - len(out), size - offset)
        out.extend(int(i) for i in perm[offset : offset + take])
    return out[world.rank :: world.size]


def lr_at(step: int, s: StageSettings | Any) -> float:
    """Linear warm-up to ``lr``, then cosine decay to 10 % of it."""
    if s.warmup_steps and step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(1, s.steps - s.warmup_steps)
    progress = min(1.0, (step - s.warmup_steps) / span)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def collate(dataset: Any, indices: Sequence[int]) -> Batch:
    examples = [dataset[i] for i in indices]
    images = torch.stack([e.image for e in examples])
    masks = None
    if all(e.mask is not None for e in examples):
        masks = torch.stack([e.mask for e in examples])  # type: ignore[misc]
    return Batch(images, [e.caption for e in examples], masks)


class EMA:
    """Exponential moving average of a set of modules' parameters."""

    def __init__(self, modules: dict[str, nn.Module], decay: float, *, warmup: bool = False):
        self.decay = decay
        self.warmup = warmup
        self.updates = 0  # set to the resumed step on resume: the decay depends on it
        self.shadow = {
            role: {k: v.detach().clone() for k, v in m.state_dict().items()} for role, m in modules.items()
        }
        self.modules = modules

    def current_decay(self) -> float:
        """``decay``, or with warm-up ``min(decay, (1 + n) / (10 + n))`` at update ``n``: early on
        the average follows the model instead of holding on to its random initialisation."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        for role, module in self.modules.items():
            shadow = self.shadow[role]
            for name, value in module.state_dict().items():
                if value.is_floating_point():
                    shadow[name].lerp_(value.detach(), 1 - decay)
                else:
                    shadow[name].copy_(value)
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Swap the EMA weights in (for sampling), and the raw ones back after."""
        raw = {role: {k: v.detach().clone() for k, v in m.state_dict().items()} for role, m in self.modules.items()}
        for role, m in self.modules.items():
            m.load_state_dict(self.shadow[role])
        try:
            yield
        finally:
            for role, m in self.modules.items():
                m.load_state_dict(raw[role])


# --------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------


class TextCache:
    """Embeddings of a frozen text embedder, cached per caption.

    Captions repeat (the shapes world has a few thousand distinct ones), and a
    frozen embedder gives a caption the same vectors in any batch (the
    padding-invariance contract), so each caption is embedded once.
    """

    def __init__(self, embedder: Any):
        self.embedder = embedder
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def __call__(self, captions: Sequence[str]) -> TextEmbedding:
        todo = sorted({c for c in captions if c not in self.cache})
        if todo:
            out = self.embedder.embed(todo)
            for i, c in enumerate(todo):
                self.cache[c] = (out.tokens[i][out.mask[i]].clone(), out.pooled[i].clone())
        rows = [self.cache[c] for c in captions]
        length = max(1, max(int(r[0].shape[0]) for r in rows))
        first = rows[0][0]
        tokens = first.new_zeros(len(rows), length, first.shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=first.device)
        for i, (tok, _) in enumerate(rows):
            tokens[i, : tok.shape[0]] = tok
            mask[i, : tok.shape[0]] = True
        return TextEmbedding(tokens, mask, torch.stack([r[1] for r in rows]))


class LatentCache:
    """Latents of a frozen, deterministic encoder, cached per dataset index."""

    def __init__(self, encoder: Any, enabled: bool):
        self.encoder = encoder
        self.enabled = enabled
        self.cache: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        if not self.enabled:
            return self.encoder.encode(images)
        missing = [j for j, i in enumerate(indices) if i not in self.cache]
        if missing:
            z = self.encoder.encode(images[missing])
            for j, zj in zip(missing, z):
                self.cache[indices[j]] = zj
        return torch.stack([self.cache[i] for i in indices])


@dataclass
class DenoiserLoss:
    """The denoising objective: predict the scheduler's target from ``x_t``.

    Random draws (condition dropout, timesteps, noise) are made for the whole
    global batch from the step's generator, and each rank keeps its share,
    so a run gives the same updates on one process or several.
    """

    components: Components
    latents: LatentCache
    text: Callable[[Sequence[str]], TextEmbedding] | None
    condition_dropout: float
    world: World = field(default_factory=World.single)
    task: str = "text-to-image"

    def __call__(self, batch: Batch, indices: Sequence[int], g: torch.Generator) -> torch.Tensor:
        c, world = self.components, self.world
        device = c.device
        x0 = self.latents(batch.images, indices)
        b = x0.shape[0]
        share = slice(world.rank, None, world.size)
        drop = torch.rand(b * world.size, generator=g)[share] < self.condition_dropout
        t = c.scheduler.sample_timesteps(b * world.size, generator=g)[share].to(device)
        noise = randn((b * world.size, *x0.shape[1:]), g, dtype=x0.dtype)[share].to(device)
        image_context = training_image_context(self.task, c, batch, g, share)
        cond = self.conditioning(batch, b, drop.to(device), image_context)
        x_t = c.scheduler.add_noise(x0, noise, t)
        pred = c.denoiser(x_t, t.float(), cond)
        target = c.scheduler.training_target(x0, noise, t)
        per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
        return (c.scheduler.loss_weight(t).to(per_sample) * per_sample).mean()

    def conditioning(self, batch: Batch, b: int, drop: torch.Tensor, image_context: torch.Tensor | None) -> Conditioning:
        c = self.components
        if c.conditioner is None:
            return Conditioning()
        text = self.text(batch.captions) if self.text is not None else None
        cond = c.conditioner.condition(text, image_context=image_context, batch_size=b)
        if self.condition_dropout > 0 and text is not None:
            cond = cond.where(drop, c.conditioner.null(b, like=text, image_context=image_context))
        return cond


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------


@dataclass
class Stage:
    """One optimisation stage: what is trained, on what loss, for how long."""

    name: str
    modules: dict[str, nn.Module]
    loss: Callable[[Batch, Sequence[int], torch.Generator], torch.Tensor]
    settings: Any  # StageSettings or TrainSettings (same optimisation fields)
    ema_decay: float = 0.0
    ema_warmup: bool = False
    on_checkpoint: Callable[[int], None] | None = None


def optimizer_state_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                scalars["state"].setdefault(str(idx), {})[key] = value
    return tensors, scalars


def optimizer_state_from_tensors(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, extra in scalars.get("state", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    return {"state": state, "param_groups": scalars["param_groups"]}


class Trainer:
    """Runs the stages of a run, checkpointing into its run directory."""

    def __init__(
        self,
        components: Components,
        run: RunDir,
        *,
        world: World | None = None,
        progress: bool = True,
        on_sample: Callable[[str, int], None] | None = None,
        on_evaluate: Callable[[], dict[str, Any]] | None = None,
    ):
        self.c = components
        self.run = run
        self.world = world or World.single()
        self.progress = progress
        self.on_sample = on_sample
        self.on_evaluate = on_evaluate
        self.settings = components.settings
        self.state = run.read_state() if run.state_file.exists() else {"stages_done": [], "step": 0}
        self.log = _Log(run, self.world)
        self.clock = _TrainingClock(float(self.state.get("train_seconds", 0.0)))

    # -- stages ----------------------------------------------------------

    def train(self) -> None:
        c, train = self.c, self.settings.train
        if c.dataset is None:
            raise ModiffError("training needs a dataset: configure [data]")
        enc = c.encoder
        if isinstance(enc, Trainable) and enc.needs_training and "encoder" not in self.state["stages_done"]:
            self.run_stage(Stage("encoder", {"encoder": enc}, _component_loss(enc), train.encoder))
            enc.finish_training(self._sample_batches(train.encoder.batch_size))
            self._finish_stage("encoder", ["encoder"])
        txt = c.text_embedder
        if txt is not None and "text_embedder" not in self.state["stages_done"]:
            if isinstance(txt, Fittable) and txt.needs_training:
                self._log_stage("text_embedder", "fitting on the caption corpus")
                txt.fit(c.dataset.captions())
                self._finish_stage("text_embedder", ["text_embedder"])
            elif isinstance(txt, Trainable) and txt.needs_training:
                self.run_stage(Stage("text_embedder", {"text_embedder": txt}, _component_loss(txt), train.text_embedder))
                txt.finish_training(self._sample_batches(train.text_embedder.batch_size))
                self._finish_stage("text_embedder", ["text_embedder"])
        if "denoiser" not in self.state["stages_done"]:
            self.run_stage(self.denoiser_stage())
            self._finish_stage("denoiser", self._denoiser_roles())
        self._report_data()

    def _report_data(self) -> None:
        """Datasets that skip unreadable files report them once training ends."""
        report = getattr(self.c.dataset, "report", None)
        if not callable(report) or not self.world.is_main:
            return
        data = report()
        atomic_write_json(self.run.path / "data_report.json", data)
        if isinstance(data, dict) and data.get("skipped"):
            summary = getattr(self.c.dataset, "summary", None)
            print(summary() if callable(summary) else f"data: {data['skipped']} unreadable file(s) skipped", flush=True)

    def _denoiser_roles(self) -> list[str]:
        roles = ["denoiser"]
        if isinstance(self.c.conditioner, nn.Module):
            roles.append("conditioner")
        if getattr(self.c.text_embedder, "joint_training", False):
            roles.append("text_embedder")
        return roles

    def denoiser_stage(self) -> Stage:
        c, train = self.c, self.settings.train
        joint = getattr(c.text_embedder, "joint_training", False)
        text: Any = None
        if c.text_embedder is not None:
            text = c.text_embedder.embed if joint else TextCache(c.text_embedder)
        frozen_encoder = not any(p.requires_grad for p in _params(c.encoder))
        deterministic = frozen_encoder and not getattr(c.encoder, "sample_posterior", False)
        for role in ("encoder",) + (() if joint else ("text_embedder",)):
            m = c.get(role)
            if isinstance(m, nn.Module):
                m.eval().requires_grad_(False)
        latents = LatentCache(c.encoder, deterministic)
        task = self.settings.run.task
        if task == "segmentation":
            loss: Any = SegmentationLoss(c, latents)
        else:
            loss = DenoiserLoss(c, latents, text, train.condition_dropout, self.world, task)
        modules = {role: c.get(role) for role in self._denoiser_roles()}
        return Stage("denoiser", modules, loss, train, ema_decay=train.ema_decay, ema_warmup=train.ema_warmup)

    def _sample_batches(self, batch_size: int, count: int = 8) -> list[Batch]:
        ds = self.c.dataset
        g = torch.Generator().manual_seed(step_seed(self.settings.run.seed, "finish", 0))
        n = min(len(ds), batch_size * count)
        idx = torch.randperm(len(ds), generator=g)[:n].tolist()
        return [collate(ds, idx[i : i + batch_size]).to(self.c.device) for i in range(0, n, batch_size)]

    def _log_stage(self, stage: str, message: str) -> None:
        if self.world.is_main and self.progress:
            print(f"[{stage}] {message}", flush=True)

    def _finish_stage(self, stage: str, roles: list[str]) -> None:
        for role in roles:
            m = self.c.get(role)
            if isinstance(m, nn.Module):
                if isinstance(m, Trainable) or isinstance(m, Fittable):
                    m.needs_training = False
                self._save_component(role, m)
        self.state["stages_done"] = [*self.state["stages_done"], stage]
        self.state["step"] = 0
        self.state["train_seconds"] = self.clock.seconds()
        self.state.pop("stage", None)
        if self.world.is_main:
            self.run.write_state(self.state)
        self.world.barrier()

    def _save_component(self, role: str, module: nn.Module, state: dict[str, torch.Tensor] | None = None) -> None:
        if not self.world.is_main:
            return
        resolved = self.settings.components[role]
        save_component(self.run, role, module, resolved.registration, resolved.params, state)

    # -- the loop --------------------------------------------------------

    def run_stage(self, stage: Stage) -> None:
        s, seed, world, device = stage.settings, self.settings.run.seed, self.world, self.c.device
        params = [p for m in stage.modules.values() for p in m.parameters() if p.requires_grad]
        if not params:
            raise ModiffError(f"stage {stage.name!r} has nothing to train: no parameter requires a gradient")
        for m in stage.modules.values():
            m.train()
        opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        ema = EMA(stage.modules, stage.ema_decay, warmup=stage.ema_warmup) if stage.ema_decay > 0 else None
        start = self._resume(stage, opt, ema)
        if ema is not None:
            ema.updates = start
        precision = self.settings.run.precision
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
        dataset = self.c.dataset
        last_saved = start
        bar = _progress(stage.name, s.steps, start, enabled=self.progress and world.is_main)
        t0, done_in_window = time.perf_counter(), 0
        step = start
        try:
            for step in range(start, s.steps):
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, s)
                g = torch.Generator().manual_seed(step_seed(seed, stage.name, step))
                torch.manual_seed(step_seed(seed, f"{stage.name}/torch", step) + world.rank)
                idx = batch_indices(seed, stage.name, step, s.batch_size, len(dataset), world)
                batch = collate(dataset, idx).to(device)
                with autocast(device, precision):
                    loss = stage.loss(batch, idx, g)
                if not torch.isfinite(loss.detach()):
                    raise NonFiniteLoss(
                        f"the {stage.name} loss is {float(loss.detach())} at step {step} (component: "
                        f"{self._names(stage)}); stopped, keeping the last good checkpoint at step {last_saved}. "
                        "Lower the learning rate, enable gradient clipping, or use precision = \"fp32\"."
                    )
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                world.all_reduce_grads(params)
                if s.grad_clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
                scaler.step(opt)
                scaler.update()
                if ema is not None:
                    ema.update()
                done_in_window += 1
                if (step + 1) % self.settings.train.log_every == 0 or step + 1 == s.steps:
                    value = world.mean(float(loss.detach()))
                    elapsed = time.perf_counter() - t0
                    self.log.write(
                        {"stage": stage.name, "step": step + 1, "loss": value, "lr": lr_at(step, s),
                         "steps_per_s": done_in_window / max(elapsed, 1e-9)}
                    )
                    bar.set_postfix(loss=f"{value:.4f}")
                    t0, done_in_window = time.perf_counter(), 0
                bar.update(1)
                every = self.settings.train.checkpoint_every
                if (step + 1) % every == 0 and step + 1 < s.steps:
                    self._checkpoint(stage, step + 1, opt, ema)
                    last_saved = step + 1
                sample_every = self.settings.train.sample_every
                if stage.name == "denoiser" and sample_every and (step + 1) % sample_every == 0 and self.on_sample:
                    self._sample(ema, step + 1)
                eval_every = self.settings.train.eval_every
                if stage.name == "denoiser" and eval_every and (step + 1) % eval_every == 0 and step + 1 < s.steps:
                    self._evaluate(ema, step + 1)
            self._checkpoint(stage, s.steps, opt, ema)
        except KeyboardInterrupt:
            done = step  # the interrupted step did not finish
            if done > last_saved:
                self._checkpoint(stage, done, opt, ema)
            raise TrainingInterrupted(
                f"interrupted during {stage.name} at step {done}; checkpoint saved. "
                f"Continue with `modiff train {self.run.settings} --resume`."
            ) from None
        finally:
            bar.close()
        if ema is not None:
            for role, m in stage.modules.items():
                m.load_state_dict(ema.shadow[role])
        for m in stage.modules.values():
            m.eval()
        if stage.name == "denoiser" and self.settings.train.eval_every and s.steps:
            self._evaluate(None, s.steps)  # the EMA weights are loaded by now
        if stage.name == "denoiser" and self.on_sample:
            with self.clock.paused():
                self.on_sample("final", s.steps)

    def _names(self, stage: Stage) -> str:
        parts = []
        for role in stage.modules:
            reg = self.settings.components[role].registration
            parts.append(f"{role} {reg.name!r} from {reg.distribution}")
        return ", ".join(parts)

    def _sample(self, ema: EMA | None, step: int) -> None:
        if not self.world.is_main or self.on_sample is None:
            return
        with self.clock.paused(), torch.no_grad(), ema.applied() if ema is not None else _nullcontext():
            self.on_sample(f"step-{step:06d}", step)

    def _evaluate(self, ema: EMA | None, step: int) -> None:
        """The run's evaluator on the current (EMA) weights, logged with the training
        seconds so far; evaluation time is not training time."""
        if self.on_evaluate is None:
            return
        if self.world.is_main:
            seconds = self.clock.seconds()
            with self.clock.paused(), torch.no_grad(), ema.applied() if ema is not None else _nullcontext():
                modules = [m for _, m in self.c.modules()]
                training = [m.training for m in modules]
                for m in modules:
                    m.eval()
                try:
                    result = self.on_evaluate()
                finally:
                    for m, was in zip(modules, training):
                        m.train(was)
            numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.log.write({"stage": "denoiser", "step": step, "kind": "eval", "train_seconds": seconds,
                            "eval": numbers})
        self.world.barrier()

    def _checkpoint(self, stage: Stage, step: int, opt: torch.optim.Optimizer, ema: EMA | None) -> None:
        """Weights for inference (EMA) into components/, raw weights and
        optimizer state into checkpoint/, then state.json names the step.
        state.json is written last: until it moves, a resume uses the old step."""
        world = self.world
        if world.is_main:
            for role, m in stage.modules.items():
                self._save_component(role, m, ema.shadow[role] if ema is not None else None)
            tensors, scalars = optimizer_state_to_tensors(opt)
            for role, m in stage.modules.items():
                for k, v in m.state_dict().items():
                    tensors[f"model.{role}.{k}"] = v
            atomic_save_tensors(self.run.checkpoint / "trainer.safetensors", tensors)
            atomic_write_json(self.run.checkpoint / "trainer.json", {"stage": stage.name, "step": step, **scalars})
            self.state.update(stage=stage.name, step=step, train_seconds=self.clock.seconds())
            self.run.write_state(self.state)
        world.barrier()

    def _resume(self, stage: Stage, opt: torch.optim.Optimizer, ema: EMA | None) -> int:
        if self.state.get("stage") != stage.name or not self.state.get("step"):
            return 0
        meta_path = self.run.checkpoint / "trainer.json"
        tensors, _ = read_tensors(self.run.checkpoint / "trainer.safetensors", device=self.c.device)
        scalars = json.loads(meta_path.read_text())
        step = int(self.state["step"])
        if scalars.get("stage") != stage.name or int(scalars.get("step", -1)) != step:
            raise ModiffError(
                f"{self.run.checkpoint} does not match {self.run.state_file} (stage/step differ); "
                "the run directory was modified by hand"
            )
        for role, m in stage.modules.items():
            prefix = f"model.{role}."
            m.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        opt.load_state_dict(optimizer_state_from_tensors(tensors, scalars))
        if ema is not None:
            for role in stage.modules:  # the EMA weights are the component files
                ema_tensors, _ = read_tensors(self.run.weights(role), device=self.c.device)
                shadow = ema.shadow[role]
                for k in shadow:
                    shadow[k].copy_(ema_tensors[k])
        if self.world.is_main:
            self.run.truncate_metrics(stage.name, step)
        return step


def _component_loss(component: Any) -> Callable[[Batch, Sequence[int], torch.Generator], torch.Tensor]:
    def loss(batch: Batch, indices: Sequence[int], g: torch.Generator) -> torch.Tensor:
        return component.training_loss(batch)

    return loss


def _params(module: Any) -> list[nn.Parameter]:
    return list(module.parameters()) if isinstance(module, nn.Module) else []


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


class _TrainingClock:
    """Wall seconds spent training, carried across resumes (the state file keeps
    them), with sampling and evaluation paused out: the x-axis of a learning curve."""

    def __init__(self, already: float = 0.0):
        self.already = already
        self.started = time.perf_counter()
        self.excluded = 0.0

    def seconds(self) -> float:
        return self.already + time.perf_counter() - self.started - self.excluded

    @contextmanager
    def paused(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t0


class _Log:
    def __init__(self, run: RunDir, world: World):
        self.run, self.world = run, world

    def write(self, record: dict[str, Any]) -> None:
        if self.world.is_main:
            self.run.append_metrics({**record, "time": time.time()})


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def _progress(stage: str, total: int, initial: int, *, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=stage, unit="step", dynamic_ncols=True, leave=True)
