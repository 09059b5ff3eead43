"""Continuing a run from its committed checkpoint.

Finished stages get their final weights back; the stage in progress gets its
raw weights, optimizer state, EMA weights and gradient scaler's state, and
continues at the step after the checkpoint's, so that with the step-pure data
order (:mod:`.order`) a resumed run ends bit for bit where an uninterrupted one
would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..assembly import Components
from ..checkpoint import Checkpoint, load_component
from ..files import read_tensors
from ..training_plan import roles_of
from .optim import EMA, optimizer_state_from_tensors
from .stages import Stage


@dataclass(frozen=True)
class ResumePoint:
    """Where a stage continues: the first step to take, and the gradient scaler's saved state."""

    step: int = 0
    scaler_state: dict[str, Any] = field(default_factory=dict)


def restore_finished(components: Components, checkpoint: Checkpoint, stages_done: list[str]) -> None:
    """The weights of every finished stage, from the checkpoint."""
    for stage in stages_done:
        for role in roles_of(components, stage):
            module = components.get(role)
            if isinstance(module, nn.Module):
                load_component(checkpoint, role, module, components.settings.components[role].registration)


def _resumes_in(stage: Stage, checkpoint: Checkpoint | None) -> bool:
    """Whether ``checkpoint`` was committed in the middle of ``stage``."""
    return checkpoint is not None and checkpoint.stage == stage.name and bool(checkpoint.step)


def restore_assets(stage: Stage, checkpoint: Checkpoint | None) -> None:
    """The assets (a vocabulary) of ``stage``'s modules, when the run resumes within it.

    Called before the stage's optimizer and EMA take the modules' parameters:
    ``load_assets`` may replace a parameter (a word table resized to the saved
    vocabulary), and an optimizer given the tensor it replaced steps one the
    module no longer uses, so the resumed run's word vectors never moved again.

    Reading assets leaves what the stage trains as it was (:func:`_keep_trainability`):
    a replaced parameter comes back with ``requires_grad=True``, and a module the
    stage holds frozen (a distilled student's teacher text embedder) would then
    give the optimizer more parameters than the state the checkpoint saved.
    """
    if checkpoint is None or not _resumes_in(stage, checkpoint):
        return
    for role, m in stage.modules.items():
        load_assets = getattr(m, "load_assets", None)
        if callable(load_assets) and checkpoint.assets(role).is_dir():
            with _keep_trainability(m):
                load_assets(checkpoint.assets(role))


@contextmanager
def _keep_trainability(module: nn.Module) -> Iterator[None]:
    """Each of ``module``'s parameters requires a gradient after the block as it did
    before, by name; a parameter new to it is frozen when the module had parameters and
    none of them was."""
    before = {name: p.requires_grad for name, p in module.named_parameters()}
    yield
    frozen = bool(before) and not any(before.values())
    for name, p in module.named_parameters():
        p.requires_grad_(before.get(name, not frozen and p.requires_grad))


def resume_stage(
    stage: Stage, checkpoint: Checkpoint | None, opt: torch.optim.Optimizer, ema: EMA | None
) -> ResumePoint:
    """``stage``'s state as ``checkpoint`` left it mid-stage; step 0 when the checkpoint is not in it.
    Its modules' assets are back already (:func:`restore_assets`, before ``opt`` was built)."""
    if checkpoint is None or not _resumes_in(stage, checkpoint):
        return ResumePoint()
    # Read on the CPU: load_state_dict moves the moments to the parameters' device, but would leave
    # AdamW's step counters on a GPU, where every step then waits to read them.
    tensors, scalars = checkpoint.trainer_state(device="cpu")
    for role, m in stage.modules.items():
        prefix = f"model.{role}."
        m.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    opt.load_state_dict(optimizer_state_from_tensors(tensors, scalars))
    if ema is not None:
        for role in stage.modules:  # the EMA weights are the component files
            ema_tensors, _ = read_tensors(checkpoint.weights(role), device="cpu")
            shadow = ema.shadow[role]
            for k in shadow:
                shadow[k].copy_(ema_tensors[k])
    return ResumePoint(checkpoint.step, scalars.get("grad_scaler", {}))
