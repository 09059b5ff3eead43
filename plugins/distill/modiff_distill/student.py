"""The student denoiser: a copy of the teacher's, told the guidance scale.

The guidance scale arrives as the conditioning's ``vector`` (see
:mod:`.conditioner`). The teacher's denoiser takes no vector, so the student
adds a learned embedding of it to the output of the teacher's time embedding
(where a vector-conditioned UNet adds its ``class_embedding``); its last
layer starts at zero, so the student starts as the teacher.

The distillation's target network, an EMA of the student, lives here as
buffers: the trainer checkpoints a stage's modules, so a killed distillation
resumes with the target exactly as it was.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

import modiff
from modiff.protocols import Conditioning, DenoiserSpec

from .config import StudentSettings
from .teacher import load_teacher


class TargetWeights(nn.Module):
    """The target network's weights, one buffer per tensor of the student (``.`` written ``:``)."""

    def __init__(self, student: dict[str, Tensor]):
        super().__init__()
        for key, value in student.items():
            self.register_buffer(key.replace(".", ":"), value.detach().clone())

    def weights(self) -> dict[str, Tensor]:
        """The target's weights under the student's names."""
        return {name.replace(":", "."): value for name, value in self.named_buffers()}


class ConsistencyStudent(nn.Module):
    """The teacher's denoiser plus an embedding of the guidance scale, and the target network."""

    def __init__(self, teacher: nn.Module, spec: DenoiserSpec):
        super().__init__()
        time_embedding = getattr(teacher, "time_embedding", None)
        linears = [m for m in time_embedding.modules() if isinstance(m, nn.Linear)] if time_embedding else []
        vector_dim = spec.conditioning.vector_dim
        if not linears or not vector_dim:
            raise modiff.ModiffError(
                "consistency-student needs a teacher denoiser with a time embedding (a unet) and the "
                '"consistency" conditioner (its guidance vector)'
            )
        self.spec = spec
        self.unet = copy.deepcopy(teacher).requires_grad_(True)
        width = linears[-1].out_features
        self.guidance_embedding = nn.Sequential(nn.Linear(vector_dim, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(self.guidance_embedding[2].weight)
        nn.init.zeros_(self.guidance_embedding[2].bias)
        self._vector: Tensor | None = None
        self.unet.time_embedding.register_forward_hook(self._add_guidance)
        self.target = TargetWeights(self.state_dict())

    def _add_guidance(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        if self._vector is None:
            return output
        return output + self.guidance_embedding(self._vector.to(output.dtype))

    def student_weights(self) -> dict[str, Tensor]:
        """The student's own tensors (not the target's)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("target.")}

    def forward(self, x: Tensor, t: Tensor, conditioning: Conditioning) -> Tensor:
        self._vector = conditioning.vector
        try:
            return self.unet(x, t, replace(conditioning, vector=None))
        finally:
            self._vector = None


def build_student(settings: StudentSettings, context: modiff.BuildContext) -> ConsistencyStudent:
    """The teacher run's denoiser, copied, with the guidance embedding."""
    spec: DenoiserSpec | None = getattr(context, "denoiser_spec", None)
    if spec is None:
        raise ValueError("consistency-student needs context.denoiser_spec (set by the assembly)")
    teacher = load_teacher(settings.teacher, "[denoiser] teacher", context.device)
    t_spec = teacher.components.denoiser.spec
    if (t_spec.in_channels, t_spec.sample_size) != (spec.in_channels, spec.sample_size):
        raise modiff.SettingsError(
            [
                f"[denoiser] teacher = {settings.teacher!r} does not fit: its denoiser takes "
                f"{t_spec.in_channels}x{t_spec.sample_size}x{t_spec.sample_size} latents, this run's encoder gives "
                f"{spec.in_channels}x{spec.sample_size}x{spec.sample_size}"
            ]
        )
    return ConsistencyStudent(teacher.components.denoiser, spec).to(torch.device(context.device))
