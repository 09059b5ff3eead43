"""Which stages a run trains and which components each stage owns.

Decided from the components as built from the settings — never from what a
checkpoint restored — so that a resumed run and a loaded pipeline agree with
the run that wrote them on what must be in its checkpoints. It lies below both
the trainer and :class:`modiff.Pipeline`, so that loading a run, which checks
its checkpoint against this plan, imports no training module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from .protocols import Fittable, Trainable, trains_jointly

STAGES = ("encoder", "text_embedder", "denoiser")


def stages_to_train(components: Any) -> list[str]:
    """The stages of the run, in order: an encoder or text embedder that still
    needs training has a stage of its own; the denoiser stage always runs."""
    plan = []
    if isinstance(components.encoder, Trainable) and components.encoder.needs_training:
        plan.append("encoder")
    text = components.text_embedder
    if text is not None and isinstance(text, (Fittable, Trainable)) and text.needs_training:
        plan.append("text_embedder")
    plan.append("denoiser")
    return plan


def roles_of(components: Any, stage: str) -> list[str]:
    """The roles whose weights ``stage`` trains: itself, or for the denoiser
    stage the denoiser, a conditioner with weights, and a text embedder that
    asks for ``joint_training`` (:class:`~modiff.protocols.TrainsJointly`)."""
    if stage != "denoiser":
        return [stage]
    roles = ["denoiser"]
    if isinstance(components.conditioner, nn.Module):
        roles.append("conditioner")
    if trains_jointly(components.text_embedder):
        roles.append("text_embedder")
    return roles


def trained_roles(components: Any, stages: Iterable[str]) -> list[str]:
    """Every role ``stages`` train, each once, in stage order."""
    return list(dict.fromkeys(role for stage in stages for role in roles_of(components, stage)))
