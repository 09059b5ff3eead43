"""The training loop the core owns, for every stage of a run.

``modiff train`` runs the stages a run needs, in order:

1. ``encoder`` — an autoencoder that still needs training (``Trainable``).
2. ``text_embedder`` — fitted on the caption corpus (``Fittable``), trained
   on image–caption pairs (``Trainable``), or both, in that order.
3. ``denoiser`` — the denoiser and conditioner (and a text embedder that asks
   for ``joint_training``) on the task's loss, the others frozen.

Every stage shares one loop: AdamW with warm-up and cosine decay, gradient
clipping, mixed precision, EMA weights (denoiser stage), checkpoints that
become valid at one atomic step (:mod:`modiff.checkpoint`), resume, metrics,
a progress bar, and Ctrl-C that finishes the step, checkpoints and exits.

Determinism: the batch at step ``s`` and every random draw of that step are
pure functions of ``(seed, stage, s)`` (:mod:`.order`), so a resumed run sees
exactly the data and noise an uninterrupted one would, and distributed ranks
take disjoint shares of the same global batch.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..assembly import Components
from ..checkpoint import Checkpoint, CheckpointWriter, component_metadata, load_component
from ..devices import autocast
from ..distributed import World
from ..errors import ModiffError, RunError
from ..protocols import Batch, Fittable, Trainable
from ..runs import RunDir
from ..settings import StageSettings
from .caches import FrozenCache
from .losses import Latents, StepLoss, Text, component_loss
from .optim import EMA, adamw, lr_at, optimizer_state_from_tensors, optimizer_state_to_tensors
from .order import batch_indices, collate, step_seed
from .plan import roles_of, stages_to_train
from .step import TrainingStep


class TrainingInterrupted(ModiffError):
    """Ctrl-C during training; the checkpoint is saved and the run can resume."""

    exit_code = 130


class NonFiniteLoss(ModiffError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Stage:
    """One optimisation stage: what is trained, on what loss, for how long."""

    name: str
    modules: dict[str, nn.Module]
    loss: StepLoss
    settings: StageSettings
    ema_decay: float = 0.0
    ema_warmup: bool = False


class Trainer:
    """Runs the stages of a run, committing checkpoints into its run directory.

    ``resume_from`` is the run's committed checkpoint when resuming: finished
    stages are restored from it, the stage in progress continues from its
    trainer state, and stages not started begin from their initial weights.
    """

    def __init__(
        self,
        components: Components,
        run: RunDir,
        *,
        world: World | None = None,
        progress: bool = True,
        resume_from: Checkpoint | None = None,
        on_sample: Callable[[str, int], None] | None = None,
        on_evaluate: Callable[[], dict[str, Any]] | None = None,
        on_stage_done: Callable[[str, Checkpoint], None] | None = None,
    ):
        self.components = components
        self.run = run
        self.world = world or World.single()
        self.progress = progress
        self.on_sample = on_sample
        self.on_evaluate = on_evaluate
        #: Called on the main process with each finished stage and the checkpoint that ends it.
        self.on_stage_done = on_stage_done
        self.settings = components.settings
        if resume_from is not None and resume_from.legacy:
            raise RunError(
                f"{run.path} was written by an older modiff (components/ at the run's root); it can generate but "
                "not resume. Train it again with --overwrite."
            )
        self.checkpoint = resume_from
        self.stages_done: list[str] = resume_from.stages_done if resume_from is not None else []
        self.plan = stages_to_train(components)
        self.clock = _TrainingClock(resume_from.train_seconds if resume_from is not None else 0.0)

    # -- what to train -----------------------------------------------------

    def roles_of(self, stage: str) -> list[str]:
        """The roles whose weights ``stage`` trains (and its checkpoints hold)."""
        return roles_of(self.components, stage)

    # -- stages ------------------------------------------------------------

    def train(self) -> None:
        with self.clock.counting():
            self._train()

    def _train(self) -> None:
        c, train = self.components, self.settings.train
        if c.dataset is None:
            raise ModiffError("training needs a dataset: configure [data]")
        c.task.check(c)
        self._restore_finished()
        if "encoder" in self.plan and "encoder" not in self.stages_done:
            self.run_stage(
                Stage("encoder", {"encoder": c.encoder}, component_loss(c.encoder, self.world), train.encoder)
            )
            self._finish("encoder", c.encoder, train.encoder.batch_size)
            self._commit_stage("encoder")
        txt = c.text_embedder
        if "text_embedder" in self.plan and "text_embedder" not in self.stages_done:
            if isinstance(txt, Fittable):
                self._log_stage("text_embedder", "fitting on the caption corpus")
                txt.fit(c.dataset.captions())
            if isinstance(txt, Trainable):  # after fitting, if both (a vocabulary, then a pretext task)
                loss = component_loss(txt, self.world)
                self.run_stage(Stage("text_embedder", {"text_embedder": txt}, loss, train.text_embedder))
                self._finish("text_embedder", txt, train.text_embedder.batch_size)
            self._commit_stage("text_embedder")
        if "denoiser" not in self.stages_done:
            self.run_stage(self.denoiser_stage())
            self._commit_stage("denoiser")
            self._after_denoiser()
        self._report_data()

    def _restore_finished(self) -> None:
        """On resume: the weights of every finished stage, from the checkpoint."""
        if self.checkpoint is None:
            return
        for stage in self.stages_done:
            for role in self.roles_of(stage):
                module = self.components.get(role)
                if isinstance(module, nn.Module):
                    load_component(self.checkpoint, role, module, self.settings.components[role].registration)

    def denoiser_stage(self) -> Stage:
        c, train = self.components, self.settings.train
        joint = getattr(c.text_embedder, "joint_training", False)
        for role in ("encoder",) + (() if joint else ("text_embedder",)):
            m = c.get(role)
            if isinstance(m, nn.Module):
                m.eval().requires_grad_(False)
        # The encoder is frozen in this stage (whether or not a stage of its own trained it), so its latents
        # can be cached unless it samples its posterior.
        deterministic = not getattr(c.encoder, "sample_posterior", False)
        cache = FrozenCache(
            c.dataset,
            encoder=c.encoder if deterministic else None,
            embedder=c.text_embedder if c.text_embedder is not None and not joint else None,
        )
        def encoded(images: torch.Tensor, indices: Sequence[int], step: TrainingStep) -> torch.Tensor:
            # the posterior sample's noise from the step, per sample, as one process would draw it
            with torch.no_grad():
                return c.encoder.encode(images, generator=step.generators(len(images)))

        latents: Latents = cache.latents if deterministic else encoded
        text: Text | None = None
        if c.text_embedder is not None:
            text = (lambda captions, indices: c.text_embedder.embed(captions)) if joint else cache.text
        loss = c.task.training_loss(
            c, latents=latents, text=text, condition_dropout=train.condition_dropout, world=self.world
        )
        modules = {role: c.get(role) for role in self.roles_of("denoiser")}
        return Stage("denoiser", modules, loss, train, ema_decay=train.ema_decay, ema_warmup=train.ema_warmup)

    def _finish(self, stage: str, component: Any, batch_size: int) -> None:
        """The component's ``finish_training`` (a latent scale to estimate), seeded
        alike on every process so that all of them keep the same component."""
        torch.manual_seed(step_seed(self.settings.run.seed, f"{stage}/finish", 0))
        component.finish_training(self._sample_batches(batch_size))

    def _sample_batches(self, batch_size: int, count: int = 8) -> list[Batch]:
        ds = self.components.dataset
        g = torch.Generator().manual_seed(step_seed(self.settings.run.seed, "finish", 0))
        n = min(len(ds), batch_size * count)
        idx = torch.randperm(len(ds), generator=g)[:n].tolist()
        return [collate(ds, idx[i : i + batch_size]).to(self.components.device) for i in range(0, n, batch_size)]

    def _log_stage(self, stage: str, message: str) -> None:
        if self.world.is_main and self.progress:
            print(f"[{stage}] {message}", flush=True)

    def _after_denoiser(self) -> None:
        steps = self.settings.train.steps
        if self.settings.train.eval_every and steps:
            # the EMA weights are loaded by now; the time is the training's, as committed
            self._evaluate(None, steps, seconds=self.checkpoint.train_seconds if self.checkpoint else None)
        if self.on_sample is not None and self.world.is_main:
            with self.clock.paused():
                self.on_sample("final", steps)

    def _report_data(self) -> None:
        """Datasets that skip unreadable files report them once training ends."""
        from ..files import atomic_write_json

        report = getattr(self.components.dataset, "report", None)
        if not callable(report) or not self.world.is_main:
            return
        data = report()
        atomic_write_json(self.run.path / "data_report.json", data)
        if isinstance(data, dict) and data.get("skipped"):
            summary = getattr(self.components.dataset, "summary", None)
            print(summary() if callable(summary) else f"data: {data['skipped']} unreadable file(s) skipped", flush=True)

    # -- checkpoints ---------------------------------------------------------

    def _commit(
        self,
        stage: Stage | None,
        step: int,
        opt: torch.optim.Optimizer | None,
        ema: EMA | None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """One checkpoint: finished stages carried over, the stage in progress
        (EMA weights for inference, raw weights and optimizer state for resume)."""
        world = self.world
        if world.is_main:
            with CheckpointWriter(self.run.path, self.checkpoint) as writer:
                current = self.roles_of(stage.name) if stage is not None else []
                for done in self.stages_done:
                    for role in self.roles_of(done):
                        if role not in current and isinstance(self.components.get(role), nn.Module):
                            writer.carry(role)
                for role in current:
                    module = stage.modules[role]  # type: ignore[union-attr]
                    weights = ema.shadow[role] if ema is not None else module.state_dict()
                    self._save_component(writer, role, module, weights)
                if stage is not None and opt is not None:
                    tensors, scalars = optimizer_state_to_tensors(opt)
                    for role, module in stage.modules.items():
                        for k, v in module.state_dict().items():
                            tensors[f"model.{role}.{k}"] = v
                    extra = {"grad_scaler": scaler.state_dict()} if scaler is not None and scaler.is_enabled() else {}
                    writer.save_trainer(tensors, {"stage": stage.name, "step": step, **scalars, **extra})
                state = {
                    "stages_done": self.stages_done,
                    "stage": stage.name if stage is not None else None,
                    "step": step,
                    "train_seconds": self.clock.seconds(),
                }
                self.checkpoint = writer.commit(state)
        world.barrier()

    def _save_component(
        self, writer: CheckpointWriter, role: str, module: nn.Module, tensors: dict[str, torch.Tensor]
    ) -> None:
        resolved = self.settings.components[role]
        writer.save_component(role, tensors, component_metadata(role, resolved.registration, resolved.params), module)

    def _commit_stage(self, stage: str) -> None:
        """A stage is finished: its components (final weights) join the run."""
        for role in self.roles_of(stage):
            module = self.components.get(role)
            if isinstance(module, (Trainable, Fittable)):
                module.needs_training = False
        self.stages_done = [*self.stages_done, stage]
        if self.world.is_main:
            with CheckpointWriter(self.run.path, self.checkpoint) as writer:
                for done in self.stages_done:
                    for role in self.roles_of(done):
                        module = self.components.get(role)
                        if not isinstance(module, nn.Module):
                            continue
                        if done == stage:
                            self._save_component(writer, role, module, module.state_dict())
                        elif role not in self.roles_of(stage):
                            writer.carry(role)
                state = {"stages_done": self.stages_done, "stage": None, "step": 0,
                         "train_seconds": self.clock.seconds()}
                self.checkpoint = writer.commit(state)
            if self.on_stage_done is not None:
                self.on_stage_done(stage, self.checkpoint)
        self.world.barrier()

    def _resume(self, stage: Stage, opt: torch.optim.Optimizer, ema: EMA | None) -> int:
        """The step to continue ``stage`` from (0 unless the checkpoint is in it)."""
        ckpt = self.checkpoint
        if ckpt is None or ckpt.stage != stage.name or not ckpt.step:
            return 0
        # Read on the CPU: load_state_dict moves the moments to the parameters' device, but would leave
        # AdamW's step counters on a GPU, where every step then waits to read them.
        tensors, scalars = ckpt.trainer_state(device="cpu")
        self._scaler_state = scalars.get("grad_scaler", {})
        for role, m in stage.modules.items():
            prefix = f"model.{role}."
            if role in self.roles_of(stage.name) and ckpt.assets(role).is_dir():
                load_assets = getattr(m, "load_assets", None)
                if callable(load_assets):
                    load_assets(ckpt.assets(role))
            m.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        opt.load_state_dict(optimizer_state_from_tensors(tensors, scalars))
        if ema is not None:
            from ..files import read_tensors

            for role in stage.modules:  # the EMA weights are the component files
                ema_tensors, _ = read_tensors(ckpt.weights(role), device="cpu")
                shadow = ema.shadow[role]
                for k in shadow:
                    shadow[k].copy_(ema_tensors[k])
        if self.world.is_main:
            done = set(self.stages_done)
            self.run.keep_metrics(
                lambda r: (
                    r.get("stage") in done or (r.get("stage") == stage.name and int(r.get("step", 0)) <= ckpt.step)
                )
            )
        return ckpt.step

    # -- the loop --------------------------------------------------------

    def run_stage(self, stage: Stage) -> None:
        s, seed, world, device = stage.settings, self.settings.run.seed, self.world, self.components.device
        params = [p for m in stage.modules.values() for p in m.parameters() if p.requires_grad]
        if not params:
            raise ModiffError(f"stage {stage.name!r} has nothing to train: no parameter requires a gradient")
        for m in stage.modules.values():
            m.train()
        opt = adamw(params, lr=s.lr, weight_decay=s.weight_decay, betas=s.adam_betas)
        ema = EMA(stage.modules, stage.ema_decay, warmup=stage.ema_warmup) if stage.ema_decay > 0 else None
        start = self._resume(stage, opt, ema)
        if start == 0 and self.world.is_main:
            done = set(self.stages_done)
            self.run.keep_metrics(lambda r: r.get("stage") in done)
        if ema is not None:
            ema.updates = start
        precision = self.settings.run.precision
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
        dataset = self.components.dataset
        train = self.settings.train
        if scaler.is_enabled() and start and getattr(self, "_scaler_state", None):
            scaler.load_state_dict(self._scaler_state)
        finite = _FiniteWatch(device)
        bar = _progress(stage.name, s.steps, start, enabled=self.progress and world.is_main)
        t0, done_in_window = time.perf_counter(), 0
        completed = start  # steps whose update is fully applied
        last_saved = start
        updating = False
        with _interrupts_deferred() as interrupted:
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
                    finite.check(loss, step)
                    updating = True
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
                    completed, updating = step + 1, False
                    done_in_window += 1
                    at_log = completed % train.log_every == 0 or completed == s.steps
                    checkpoint_due = completed % train.checkpoint_every == 0 and completed < s.steps
                    if at_log or checkpoint_due or device.type == "cpu":
                        finite.raise_if_seen(stage.name, self._names(stage), last_saved)
                    if at_log:
                        value = world.mean(float(loss.detach()))
                        elapsed = time.perf_counter() - t0
                        self._log({"stage": stage.name, "step": completed, "loss": value, "lr": lr_at(step, s),
                                   "steps_per_s": done_in_window / max(elapsed, 1e-9)})
                        bar.set_postfix(loss=f"{value:.4f}")
                        t0, done_in_window = time.perf_counter(), 0
                    bar.update(1)
                    # every rank stops at the same step: agreed at log steps (one all-reduce) when there are several
                    if (world.size == 1 or at_log or checkpoint_due) and world.any(interrupted.is_set()):
                        raise KeyboardInterrupt
                    if checkpoint_due:
                        self._commit(stage, completed, opt, ema, scaler)
                        last_saved = completed
                    if stage.name == "denoiser":
                        if train.sample_every and completed % train.sample_every == 0 and self.on_sample:
                            self._sample(ema, completed)
                        if train.eval_every and completed % train.eval_every == 0 and completed < s.steps:
                            self._evaluate(ema, completed)
            except KeyboardInterrupt:
                # In the middle of an update the weights match no step: keep the last checkpoint.
                if completed > last_saved and not updating:
                    self._commit(stage, completed, opt, ema, scaler)
                    last_saved = completed
                raise TrainingInterrupted(
                    f"interrupted during {stage.name} at step {last_saved}; checkpoint saved. "
                    f"Continue with `modiff train {self.run.path} --resume`."
                ) from None
            finally:
                bar.close()
        if ema is not None:
            for role, m in stage.modules.items():
                m.load_state_dict(ema.shadow[role])
        for m in stage.modules.values():
            m.eval()

    def _log(self, record: dict[str, Any]) -> None:
        if self.world.is_main:
            self.run.append_metrics({**record, "time": time.time()})

    def _names(self, stage: Stage) -> str:
        parts = []
        for role in stage.modules:
            reg = self.settings.components[role].registration
            parts.append(f"{role} {reg.name!r} from {reg.distribution}")
        return ", ".join(parts)

    def _sample(self, ema: EMA | None, step: int) -> None:
        if not self.world.is_main or self.on_sample is None:
            return
        with self.clock.paused(), torch.no_grad(), ema.applied() if ema is not None else contextlib.nullcontext():
            self.on_sample(f"step-{step:06d}", step)

    def _evaluate(self, ema: EMA | None, step: int, *, seconds: float | None = None) -> None:
        """The run's evaluator on the current (EMA) weights, logged with the training
        seconds so far; evaluation time is not training time."""
        if self.on_evaluate is None:
            return
        if self.world.is_main:
            seconds = self.clock.seconds() if seconds is None else seconds
            applied = ema.applied() if ema is not None else contextlib.nullcontext()
            with self.clock.paused(), torch.no_grad(), applied:
                modules = [m for _, m in self.components.modules()]
                modes = [m.training for m in modules]
                for m in modules:
                    m.eval()
                try:
                    result = self.on_evaluate()
                finally:
                    for m, mode in zip(modules, modes):
                        m.train(mode)
            numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self._log({"stage": "denoiser", "step": step, "kind": "eval", "train_seconds": seconds, "eval": numbers})
        self.world.barrier()


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[threading.Event]:
    """A first Ctrl-C sets the returned event, which the loop checks between
    steps (so a checkpoint is never written in the middle of an update); a
    second one interrupts at once, keeping the last checkpoint."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum: int, frame: Any) -> None:
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


class _FiniteWatch:
    """Whether the loss went NaN or infinite, without making the host wait for the
    device every step: the check is queued on the device and read at log steps
    and before every checkpoint (every step on a CPU, where reading costs nothing),
    so a non-finite loss never reaches a checkpoint and the error names its step."""

    def __init__(self, device: torch.device):
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def check(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)
        self.value = loss.detach()

    def raise_if_seen(self, stage: str, names: str, last_saved: int) -> None:
        step = int(self.first_bad)
        if step >= 0:
            raise NonFiniteLoss(
                f"the {stage} loss is not finite (last value {float(self.value)}) from step {step} on (component: "
                f"{names}); stopped, keeping the last good checkpoint at step {last_saved}. "
                "Lower the learning rate, enable gradient clipping, or use precision = \"fp32\"."
            )


class _TrainingClock:
    """Wall seconds spent training, carried across resumes (checkpoints keep
    them), with sampling and evaluation paused out: the x-axis of a learning curve."""

    def __init__(self, already: float = 0.0):
        self.already = already
        self.running_since: float | None = None
        self.paused_for = 0.0

    def seconds(self) -> float:
        running = 0.0 if self.running_since is None else time.perf_counter() - self.running_since - self.paused_for
        return self.already + running

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        self.running_since, self.paused_for = time.perf_counter(), 0.0
        try:
            yield
        finally:
            self.already = self.seconds()
            self.running_since = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.paused_for += time.perf_counter() - t0


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def _progress(stage: str, total: int, initial: int, *, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=stage, unit="step", dynamic_ncols=True, leave=True)

