"""The TensorBoard tracker: one event-file series per run, continued across resumes.

A resumed run opens a new event file in the same folder with a purge step
just after the checkpoint's (``SummaryWriter(purge_step=...)``): TensorBoard's
reader then drops whatever the killed attempt logged after the checkpoint,
and the steps that follow are logged once, so every tag's steps read as one
uninterrupted series. Every write is flushed at once: a SIGKILL after a
checkpoint loses nothing logged before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import modiff

from .settings import TensorBoardSettings


class TensorBoardTracker:
    """Scalars, images and the settings of one run as TensorBoard event files."""

    def __init__(self, settings: TensorBoardSettings):
        self.settings = settings
        self.writer: Any = None  # torch's SummaryWriter once started; None before and after
        self.new_run = True

    def start(self, run: modiff.TrackedRun) -> str:
        from torch.utils.tensorboard import SummaryWriter

        folder = run.path / self.settings.folder if self.settings.folder else run.path
        purge = None if run.resume_after is None else run.resume_after + 1
        self.writer = SummaryWriter(str(folder), purge_step=purge, max_queue=self.settings.max_queue)
        self.new_run = run.resume_after is None
        return folder.relative_to(run.path.parent).as_posix()  # the run folder's name, and the events' folder in it

    def log_params(self, params: Mapping[str, modiff.protocols.ParamValue]) -> None:
        """The settings as a table in TensorBoard's text tab, once per tracked run
        (a resumed run has it from its first attempt)."""
        if self.writer is None or not self.new_run:
            return
        rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in params.items())
        self.writer.add_text("settings", f"| setting | value |\n|---|---|\n{rows}", 0)
        self.writer.flush()

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def log_image(self, step: int, name: str, image: Path) -> None:
        if self.writer is None:
            return
        import numpy as np
        from PIL import Image

        with Image.open(image) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        self.writer.add_image(name, pixels, step, dataformats="HWC")
        self.writer.flush()

    def log_artifacts(self, files: Sequence[Path]) -> None:
        """Nothing to do: TensorBoard shows no files, and these stay in the run folder beside the events."""

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
