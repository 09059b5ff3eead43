"""The optimiser's side of a stage: learning-rate schedule, EMA weights, and
the optimizer state as tensors (for a checkpoint in safetensors, not pickle)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..settings import StageSettings


def lr_at(step: int, settings: StageSettings) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``final_lr`` × ``lr`` (10 % by default)."""
    s = settings
    if s.warmup_steps and step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(1, s.steps - s.warmup_steps)
    progress = min(1.0, (step - s.warmup_steps) / span)
    floor = s.final_lr
    return s.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


#: Devices whose AdamW has a fused kernel: one pass over all parameters per
#: step instead of a dozen small operations per tensor.
FUSED_DEVICES = frozenset({"cpu", "cuda"})


def adamw(
    params: list[torch.Tensor], *, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.AdamW:
    """The stages' optimiser: AdamW, fused where torch has the kernel.

    On a small model the per-tensor loop of the plain implementation costs more
    than the arithmetic (12 ms against 2.4 ms a step for the demo's denoiser on
    one CPU thread); the fused kernel computes the same update in one pass.
    Only for contiguous parameters: a resumed optimizer's moments come back
    contiguous, and with a ``channels_last`` weight the fused kernel would pair
    them element by element in another order than before the stop.
    """
    fused = bool(params) and all(
        p.is_floating_point() and p.device.type in FUSED_DEVICES and p.is_contiguous() for p in params
    )
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)


class EMA:
    """Exponential moving average of a set of modules' parameters (and buffers)."""

    def __init__(self, modules: dict[str, nn.Module], decay: float, *, warmup: bool = False):
        self.decay = decay
        self.warmup = warmup
        self.updates = 0  # set to the resumed step on resume: the warm-up depends on it
        self.shadow = {
            role: {k: v.detach().clone() for k, v in m.state_dict().items()} for role, m in modules.items()
        }
        self.modules = modules
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (shadow, live) tensors, cached

    def current_decay(self) -> float:
        """``decay``, or with warm-up ``min(decay, (1 + n) / (10 + n))`` at update ``n``: early on
        the average follows the model instead of holding on to its random initialisation."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average: every floating tensor moves ``1 - decay`` of the
        way to the model's (one fused ``lerp`` over all of them), the rest is copied."""
        decay = self.current_decay()
        if self._pairs is None:
            self._pairs = [
                (self.shadow[role][name], value)
                for role, module in self.modules.items()
                for name, value in module.state_dict(keep_vars=False).items()
            ]
        floats = [(s, v) for s, v in self._pairs if v.is_floating_point()]
        if floats:
            torch._foreach_lerp_([s for s, _ in floats], [v.detach() for _, v in floats], 1 - decay)
        for s, v in self._pairs:
            if not v.is_floating_point():
                s.copy_(v)
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


def optimizer_state_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``opt.state_dict()`` split into tensors (``optimizer.<param>.<key>``) and JSON scalars."""
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
    """The inverse of :func:`optimizer_state_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, extra in scalars.get("state", {}).items():
        state.setdefault(int(idx), {}).update(extra)
    return {"state": state, "param_groups": scalars["param_groups"]}
