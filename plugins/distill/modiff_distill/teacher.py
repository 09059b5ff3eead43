"""The teacher: a trained run, loaded once per process and frozen.

The student run's encoder, text embedder and (inside the ``consistency``
conditioner) conditioner are the teacher's own modules, rebuilt from its
folder each time the student is built, so the student never learns them and
its checkpoints hold only what it trains. The teacher's folder must therefore
stay where it is while the student is used.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

import modiff


def load_teacher(folder: str, key: str, device: torch.device | str | None = None) -> Any:
    """The teacher run at ``folder`` as a :class:`modiff.Pipeline`, frozen; a
    clear error naming ``key`` when it is not a trained run."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise modiff.SettingsError(
            [f"{key} = {folder!r}: no such run folder (relative paths are read from the current directory)"]
        )
    try:
        return _load(str(path.resolve()), str(device) if device is not None else None)
    except modiff.ModiffError as exc:
        raise modiff.SettingsError([f"{key} = {folder!r} is not a trained run: {exc}"]) from None


@lru_cache(maxsize=4)
def _load(folder: str, device: str | None) -> Any:
    """One load per folder and device, so every role of the student shares the same teacher modules."""
    pipe = modiff.Pipeline.load(folder, device=device)
    for _, module in pipe.components.modules():
        module.eval().requires_grad_(False)
    return pipe


def teacher_component(role: str, settings: Any, context: modiff.BuildContext) -> Any:
    """The teacher's ``role`` component, after checking that it fits the student's run."""
    key = f"[{role}] teacher"
    teacher = load_teacher(settings.teacher, key, context.device)
    t_context = teacher.components.context
    if role == "encoder" and (context.dataset is not None or context.data is not None):
        if context.image_size != t_context.image_size:
            raise modiff.SettingsError(
                [
                    f"{key} = {settings.teacher!r} does not fit: it was trained on {t_context.image_size}-pixel "
                    f"images, this run's data gives {context.image_size}"
                ]
            )
    component = teacher.components.get(role)
    if component is None:
        raise modiff.SettingsError([f"{key} = {settings.teacher!r} has no {role}"])
    return component


def build_teacher_encoder(settings: Any, context: modiff.BuildContext) -> Any:
    """The teacher run's encoder, frozen."""
    return teacher_component("encoder", settings, context)


def build_teacher_text_embedder(settings: Any, context: modiff.BuildContext) -> Any:
    """The teacher run's text embedder, frozen."""
    return teacher_component("text_embedder", settings, context)
