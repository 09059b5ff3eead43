"""One stage's optimisation loop.

AdamW with warm-up and cosine decay, gradient clipping, mixed precision,
EMA weights, checkpoints every ``checkpoint_every`` steps, metrics at
``log_every``, and a stop between steps on Ctrl-C or a non-finite loss
(:mod:`.stopping`). The batch and every random draw of step ``s`` are pure
functions of ``(seed, stage, s)`` (:mod:`.order`), so a stage resumed at ``s``
takes exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import threading
import time

import torch

from ..assembly import Components
from ..devices import autocast
from ..errors import ModiffError
from .commits import RunProgress
from .optim import EMA, adamw, lr_at
from .order import batch_indices, collate, step_seed
from .reporting import NO_BAR, ProgressBar, TrainingReporter
from .resume import restore_assets, resume_stage
from .stages import Stage
from .stopping import FiniteWatch, TrainingInterrupted, interrupts_deferred


class StageRun:
    """The loop of one stage, from its first (or resumed) step to its last.

    Built with everything a step needs (optimizer, EMA, gradient scaler, the
    step to start from); :meth:`run` takes the steps, and leaves the stage's
    modules with their final (EMA) weights, in eval mode.
    """

    def __init__(
        self, stage: Stage, components: Components, run_progress: RunProgress, reporter: TrainingReporter
    ):
        self.stage, self.components, self.run_progress, self.reporter = stage, components, run_progress, reporter
        self.world, self.device, self.settings = run_progress.world, components.device, components.settings
        s = stage.settings
        restore_assets(stage, run_progress.checkpoint)  # first: it may replace parameters the optimizer would take
        self.params = [p for m in stage.modules.values() for p in m.parameters() if p.requires_grad]
        if not self.params:
            raise ModiffError(f"stage {stage.name!r} has nothing to train: no parameter requires a gradient")
        for m in stage.modules.values():
            m.train()
        self.opt = adamw(self.params, lr=s.lr, weight_decay=s.weight_decay, betas=s.adam_betas)
        self.ema = EMA(stage.modules, stage.ema_decay, warmup=stage.ema_warmup) if stage.ema_decay > 0 else None
        fp16 = self.settings.run.precision == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.start = self._resume()
        self.finite = FiniteWatch(self.device)
        self.completed = self.last_saved = self.start  # steps whose update is fully applied; steps checkpointed
        self.updating = False  # between zero_grad and the EMA update: the weights match no step
        self.bar: ProgressBar = NO_BAR
        self.window = (time.perf_counter(), 0)  # the speed's window: its start and the steps taken in it

    def _resume(self) -> int:
        """The step to start from: the checkpoint's, with the optimizer, EMA and gradient
        scaler as it left them, when the run resumes within this stage; else 0. The
        metrics the steps from there will log again are dropped."""
        resumed = resume_stage(self.stage, self.run_progress.checkpoint, self.opt, self.ema)
        done = self.run_progress.stages_done
        if resumed.step:
            self.reporter.keep_metrics(done, self.stage.name, resumed.step)
        else:
            self.reporter.keep_metrics(done)
        if self.ema is not None:
            self.ema.updates = resumed.step
        if self.scaler.is_enabled() and resumed.step and resumed.scaler_state:
            self.scaler.load_state_dict(resumed.scaler_state)
        return resumed.step

    def run(self) -> None:
        self.bar = self.reporter.bar(self.stage.name, self.stage.settings.steps, self.start)
        self.window = (time.perf_counter(), 0)
        with interrupts_deferred() as interrupted:
            try:
                for step in range(self.start, self.stage.settings.steps):
                    loss = self._update(step)
                    self._after_update(step, loss, interrupted)
            except KeyboardInterrupt:
                self._stop()
            finally:
                self.bar.close()
        if self.ema is not None:
            for role, m in self.stage.modules.items():
                m.load_state_dict(self.ema.shadow[role])
        for m in self.stage.modules.values():
            m.eval()

    def update(self, step: int) -> torch.Tensor:
        """One optimizer step on the batch of ``step``, as the loop takes it, with
        nothing after it (no metrics, evaluation or checkpoint): what
        :mod:`modiff.step_timing` times."""
        return self._update(step)

    def _update(self, step: int) -> torch.Tensor:
        """One optimizer step on the batch of ``step``; returns its loss."""
        s, name, seed, world, opt = self.stage.settings, self.stage.name, self.settings.run.seed, self.world, self.opt
        for group in opt.param_groups:
            group["lr"] = lr_at(step, s)
        g = torch.Generator().manual_seed(step_seed(seed, name, step))
        torch.manual_seed(step_seed(seed, f"{name}/torch", step) + world.rank)
        dataset = self.components.dataset
        idx = batch_indices(seed, name, step, s.batch_size, len(dataset), world)
        batch = collate(dataset, idx).to(self.device)
        with autocast(self.device, self.settings.run.precision):
            loss = self.stage.loss(batch, idx, g)
        self.finite.check(loss, step)
        self.updating = True
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        world.all_reduce_grads(self.params)
        if s.grad_clip > 0:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.params, s.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update()
        self.completed, self.updating = step + 1, False
        return loss

    def _after_update(self, step: int, loss: torch.Tensor, interrupted: threading.Event) -> None:
        """What follows an update: the finiteness check, metrics, a stop on Ctrl-C,
        in the denoiser stage samples and evaluations, and a checkpoint."""
        completed, steps, train = self.completed, self.stage.settings.steps, self.settings.train
        self.window = (self.window[0], self.window[1] + 1)
        at_log = completed % train.log_every == 0 or completed == steps
        checkpoint_due = completed % train.checkpoint_every == 0 and completed < steps
        if at_log or checkpoint_due or self.device.type == "cpu":
            self.finite.raise_if_seen(self.stage.name, self._names(), self.last_saved)
        if at_log:
            self._log(step, loss)
        self.bar.update(1)
        # every rank stops at the same step: agreed at log steps (one all-reduce) when there are several
        if (self.world.size == 1 or at_log or checkpoint_due) and self.world.any(interrupted.is_set()):
            raise KeyboardInterrupt
        # a step's grid and evaluation before its checkpoint: a kill right after the commit finds them
        # logged, one before it takes the step again with them (after it, they were lost to a resume)
        if self.stage.name == "denoiser":
            if train.sample_every and completed % train.sample_every == 0 and self.reporter.on_sample:
                self.reporter.sample(self.ema, completed)
            if train.eval_every and completed % train.eval_every == 0 and completed < steps:
                self.reporter.evaluate(self.ema, completed)
        if checkpoint_due:
            self._checkpoint()

    def _log(self, step: int, loss: torch.Tensor) -> None:
        value = self.world.mean(float(loss.detach()))
        started, steps = self.window
        speed = steps / max(time.perf_counter() - started, 1e-9)
        lr = lr_at(step, self.stage.settings)
        name, step_done = self.stage.name, self.completed
        self.reporter.log({"stage": name, "step": step_done, "loss": value, "lr": lr, "steps_per_s": speed})
        self.bar.set_postfix(loss=f"{value:.4f}")
        self.window = (time.perf_counter(), 0)

    def _checkpoint(self) -> None:
        self.run_progress.mid_stage(self.stage, self.completed, self.opt, self.ema, self.scaler)
        self.last_saved = self.completed

    def _stop(self) -> None:
        """Ctrl-C: checkpoint the last completed step, unless the interrupt came in the
        middle of an update (the weights then match no step: the last checkpoint stays)."""
        if self.completed > self.last_saved and not self.updating:
            self._checkpoint()
        raise TrainingInterrupted(
            f"interrupted during {self.stage.name} at step {self.last_saved}; checkpoint saved. "
            f"Continue with `modiff train {self.run_progress.run.path} --resume`."
        ) from None

    def _names(self) -> str:
        """The stage's components, for an error message: role, name and distribution."""
        parts = []
        for role in self.stage.modules:
            reg = self.settings.components[role].registration
            parts.append(f"{role} {reg.name!r} from {reg.distribution}")
        return ", ".join(parts)
