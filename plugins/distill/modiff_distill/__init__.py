"""modiff-distill: consistency distillation of a trained run (issue 40).

Registers the task ``consistency-distillation``, the conditioner
``consistency`` (the teacher's conditioning plus the guidance scale, and the
distillation's settings), the denoiser ``consistency-student`` (the teacher's,
copied, with a guidance embedding and the target network) and the encoder and text embedder ``teacher`` (the
teacher run's own, frozen). See docs/distillation.md. torch is imported
inside the hooks, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .config import ConsistencySettings, StudentSettings, TeacherSettings

__all__ = ["ConsistencySettings", "StudentSettings", "TeacherSettings"]


def _encoder(settings: TeacherSettings, context: modiff.BuildContext) -> Any:
    from .teacher import build_teacher_encoder

    return build_teacher_encoder(settings, context)


def _text_embedder(settings: TeacherSettings, context: modiff.BuildContext) -> Any:
    from .teacher import build_teacher_text_embedder

    return build_teacher_text_embedder(settings, context)


def _conditioner(settings: ConsistencySettings, context: modiff.BuildContext) -> Any:
    from .conditioner import build_consistency

    return build_consistency(settings, context)


@modiff.hookimpl
def register_encoders(register: modiff.Register) -> None:
    register("teacher", _encoder, TeacherSettings)


@modiff.hookimpl
def register_text_embedders(register: modiff.Register) -> None:
    register("teacher", _text_embedder, TeacherSettings)


@modiff.hookimpl
def register_conditioners(register: modiff.Register) -> None:
    register("consistency", _conditioner, ConsistencySettings)


def _student(settings: StudentSettings, context: modiff.BuildContext) -> Any:
    from .student import build_student

    return build_student(settings, context)


@modiff.hookimpl
def register_denoisers(register: modiff.Register) -> None:
    register("consistency-student", _student, StudentSettings)


@modiff.hookimpl
def register_tasks(register: modiff.RegisterTask) -> None:
    from .task import ConsistencyDistillation

    register(ConsistencyDistillation())
