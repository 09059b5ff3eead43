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
from collections.abc import Callable, Sequence
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


class PassThrough(nn.Module):
    """Stands for a skipped block: its first input, cut to the block's output channels.

    For a block that adds to its input (a residual or a transformer block, a
    middle block) that is the identity. An up block's residual layer takes its
    predecessor's output with a skip connection appended (in that order), so it
    passes the predecessor's output on and drops the skip: the skips are still
    consumed in order.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return x[:, : self.channels]

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def skip_blocks(network: nn.Module, names: Sequence[str], probe: Callable[[nn.Module], object], key: str) -> None:
    """Replace each named block of ``network`` by a :class:`PassThrough`, in place.

    The network's own layout decides what may be skipped, not a list kept here:
    ``probe(network)`` runs it once, and a block whose output has its first
    input's batch and spatial size and no more channels can pass that input on.
    Errors name ``key``, the block and what is allowed.
    """
    if not names:
        return
    blocks = dict(network.named_modules())
    unknown = [name for name in names if not name or name not in blocks]
    if unknown:
        examples = sorted(name for name in blocks if name and name.count(".") <= 1)[:12]
        raise modiff.SettingsError(
            [f"{key}: no block named {', '.join(map(repr, unknown))} in the teacher's denoiser; name a module of it "
             f"(such as {', '.join(examples)})"]
        )
    nested = sorted({inner for inner in names for outer in names if inner.startswith(outer + ".")})
    if nested:
        raise modiff.SettingsError([f"{key}: {', '.join(map(repr, nested))} lies inside another skipped block; "
                                    "name it or the block around it, not both"])
    seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            first = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
            if first is not None and isinstance(output, Tensor):
                seen[name] = (tuple(first.shape), tuple(output.shape))
        return hook

    hooks = [blocks[name].register_forward_hook(record(name)) for name in names]
    try:
        with torch.no_grad():
            probe(network)
    finally:
        for hook in hooks:
            hook.remove()
    for name in names:
        if name not in seen:
            raise modiff.SettingsError([f"{key}: {name!r} does not run as a block taking a tensor and giving one in "
                                        "the teacher's denoiser; name a block that does"])
        given, out = seen[name]
        if len(given) != len(out) or given[0] != out[0] or given[2:] != out[2:] or given[1] < out[1]:
            raise modiff.SettingsError(
                [f"{key}: {name!r} cannot be skipped: it turns {list(given[1:])} into {list(out[1:])}; only a block "
                 "whose output keeps its input's size, with no more channels, can pass its input on"]
            )
    for name in names:
        parent, _, leaf = name.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, leaf, PassThrough(seen[name][1][1]))


def null_call(spec: DenoiserSpec, conditioner: Any) -> Callable[[nn.Module], object]:
    """A probe for :func:`skip_blocks`: one call of a network at ``spec``'s size, on
    ``conditioner``'s null conditioning, on the network's own device."""

    def probe(network: nn.Module) -> object:
        device = next(network.parameters()).device
        x = torch.zeros(1, spec.in_channels, spec.sample_size, spec.sample_size, device=device)
        return network(x, torch.zeros(1, dtype=torch.long, device=device), conditioner.null(1))

    return probe


class ConsistencyStudent(nn.Module):
    """The teacher's denoiser plus an embedding of the guidance scale, and the target network."""

    def __init__(self, teacher: nn.Module, spec: DenoiserSpec, skipped: Callable[[nn.Module], None] | None = None):
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
        if skipped is not None:
            skipped(self.unet)
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

    def skipped(network: nn.Module) -> None:
        probe = null_call(t_spec, teacher.components.conditioner)
        skip_blocks(network, settings.skip_blocks, probe, "[denoiser] skip_blocks")

    return ConsistencyStudent(teacher.components.denoiser, spec, skipped).to(torch.device(context.device))
