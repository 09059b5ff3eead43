"""How a stage stops early without leaving a checkpoint that matches no step.

Two things end a stage before its last step: Ctrl-C, which is deferred to the
end of the step so that a checkpoint is never written in the middle of an
update, and a loss that is no longer finite, which is caught before it can
reach a checkpoint. Both are errors the command line shows as one line.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import ModiffError


class TrainingInterrupted(ModiffError):
    """Ctrl-C during training; the checkpoint is saved and the run can resume."""

    exit_code = 130


class NonFiniteLoss(ModiffError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[threading.Event]:
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


class FiniteWatch:
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
