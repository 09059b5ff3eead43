"""The options of ``[track.tensorboard]``."""

from __future__ import annotations

from pydantic import Field, field_validator

import modiff


class TensorBoardSettings(modiff.ComponentSettings):
    """Where the event files go and how much of each write may wait."""

    folder: str = Field(
        "",
        description="Folder for the event files, inside the run folder ('' : the run folder itself, so "
        "`tensorboard --logdir runs/` names each run after its folder).",
    )
    max_queue: int = Field(
        10, ge=1, description="Events the writer queues before writing; every log call is flushed anyway."
    )

    @field_validator("folder")
    @classmethod
    def _inside_the_run(cls, folder: str) -> str:
        parts = folder.replace("\\", "/").split("/")
        if folder.startswith("/") or ".." in parts:
            raise ValueError("a folder inside the run folder: a relative path without '..'")
        return folder
