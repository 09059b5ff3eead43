"""Settings of the distillation's components (no torch here: `modiff plugins` imports this).

The core gives a task no settings table of its own, so the distillation's
settings live with the component that carries the guidance scale to the
student: the ``consistency`` conditioner.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

import modiff


def _folder(value: str) -> str:
    if not value.strip():
        raise ValueError('teacher is empty; name the trained run folder to distill ("runs/demo")')
    return value


class TeacherSettings(modiff.ComponentSettings):
    """``[encoder]`` or ``[text_embedder]`` with ``plugin = "teacher"``: the teacher run's own, frozen."""

    teacher: str = Field(..., description="Folder of the trained run whose component this is (read, never written).")

    @field_validator("teacher")
    @classmethod
    def _teacher_named(cls, value: str) -> str:
        return _folder(value)


class StudentSettings(modiff.ComponentSettings):
    """``[denoiser] plugin = "consistency-student"``: the teacher run's denoiser, copied, told the guidance scale."""

    teacher: str = Field(..., description="Folder of the trained run whose denoiser the student starts from.")
    skip_blocks: list[str] = Field(
        [], description='Blocks of the teacher\'s denoiser, by module name ("mid_block", "up_blocks.1.attentions.1"), '
        "that the student does not run: each passes its first input on, cut to the block's output channels. A "
        "smaller student whose steps cost less; the distillation teaches the rest to do without them.",
    )

    @field_validator("teacher")
    @classmethod
    def _teacher_named(cls, value: str) -> str:
        return _folder(value)

    @field_validator("skip_blocks")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or any(not name.strip() for name in value):
            raise ValueError(f"skip_blocks = {value}: name each block once, none empty")
        return value


class ConsistencySettings(modiff.ComponentSettings):
    """``[conditioner] plugin = "consistency"``: the teacher's conditioning plus the
    guidance scale as a vector, and how the student is distilled."""

    teacher: str = Field(..., description="Folder of the trained run to distill (read, never written).")
    guidance: float = Field(
        1.5, ge=0, description="The guidance scale the student draws with when a generation names none (w)."
    )
    guidance_range: tuple[float, float] = Field(
        (1.0, 3.0), description="[low, high]: the teacher's guidance scale is drawn uniformly from it each sample."
    )
    embedding_dim: int = Field(32, ge=2, description="Width of the sinusoidal guidance embedding (even).")
    original_inference_steps: int = Field(
        50, ge=2, description="Points of the skipping schedule (the lcm sampler's setting of the same name): the "
        "teacher's DDIM step skips num_train_timesteps / this many timesteps.",
    )
    timestep_scaling: float = Field(
        10.0, gt=0, description="The lcm sampler's boundary condition scale (c_skip, c_out)."
    )
    segments: int = Field(
        0, ge=0, description="0: latent consistency (every timestep maps to the clean sample; sample with the lcm "
        "sampler). N >= 1: multistep consistency, the schedule cut into N segments and each timestep mapped to "
        "its segment's lower end (sample with ddim, trailing spacing, at N steps).",
    )
    teacher_path: bool = Field(
        False, description="With segments >= 1: the student's input at each point below the top is where the "
        "teacher's guided DDIM steps from pure noise land (what the ddim sampler will give it), not the data noised "
        "to that timestep. Costs original_inference_steps - 1 more teacher calls on the whole batch a step.",
    )
    loss: Literal["l2", "huber"] = Field(
        "huber", description='"l2": the LCM paper\'s squared error; "huber": pseudo-Huber, sqrt(d^2 + c^2) - c.'
    )
    huber_c: float = Field(0.001, gt=0, description="The pseudo-Huber loss's c.")
    target_ema: float = Field(
        0.95, ge=0, lt=1, description="Decay of the target network, an EMA of the student (0: the student itself)."
    )

    @field_validator("teacher")
    @classmethod
    def _teacher_named(cls, value: str) -> str:
        return _folder(value)

    @model_validator(mode="after")
    def _range_ordered(self) -> ConsistencySettings:
        low, high = self.guidance_range
        if not 0 <= low <= high:
            raise ValueError(f"guidance_range = [{low}, {high}]: use [low, high] with 0 <= low <= high")
        if self.segments and self.original_inference_steps % self.segments:
            raise ValueError(f"segments = {self.segments} does not divide original_inference_steps = "
                             f"{self.original_inference_steps}: each segment must hold whole skips")
        if self.teacher_path and not self.segments:
            raise ValueError("teacher_path needs multistep consistency (segments >= 1): the latent consistency "
                             "sampler adds fresh noise between steps, so its inputs are not on the teacher's path")
        if self.embedding_dim % 2:
            raise ValueError(f"embedding_dim = {self.embedding_dim} is odd; use an even width such as 32")
        return self
