"""Test helpers for the shapes world: Hypothesis strategies for scenes, and
stand-in pipelines for evaluator tests (one that draws exactly what each
prompt says, one that draws nothing).

Needs ``hypothesis`` (a test dependency); nothing in the plugin imports this
module.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from .shapes import COLOURS, SHAPES, SIZES, SceneSampler, ShapeObject, parse, render

IMAGE_SIZES = (32, 64, 128)


@st.composite
def sampled_scenes(draw: Any, image_sizes: tuple[int, ...] = IMAGE_SIZES, max_objects: int = 4) -> tuple:
    """``(image_size, objects)`` drawn by the world's own sampler."""
    size = draw(st.sampled_from(image_sizes))
    sampler = SceneSampler(
        seed=draw(st.integers(0, 2**31)), image_size=size, max_objects=draw(st.integers(1, max_objects))
    )
    return size, sampler.scene(draw(st.integers(0, 10**9))).objects


@st.composite
def centred_scenes(draw: Any, image_sizes: tuple[int, ...] = IMAGE_SIZES, max_objects: int = 9) -> tuple:
    """``(image_size, objects)`` with any cells (centred positions), colours, shapes and sizes."""
    size = draw(st.sampled_from(image_sizes))
    n = draw(st.integers(1, max_objects))
    cells = draw(st.lists(st.integers(0, 8), min_size=n, max_size=n, unique=True))
    objects = tuple(
        ShapeObject(
            draw(st.sampled_from(COLOURS)), draw(st.sampled_from(SHAPES)), c, draw(st.sampled_from(list(SIZES)))
        )
        for c in cells
    )
    return size, objects


def to_pil(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb, "RGB")


class TruthPipeline:
    """Stands in for ``modiff.Pipeline``: draws exactly what each prompt says,
    optionally transformed by ``edit`` (objects -> objects) to make it wrong."""

    def __init__(self, image_size: int = 32, edit: Any = None) -> None:
        self.image_size = image_size
        self.edit = edit
        self.calls: list[dict[str, Any]] = []

    def generate(
        self,
        prompts: list[str],
        *,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        batch_size: int | None = None,
    ) -> list[Image.Image]:
        self.calls.append(
            {"n": len(prompts), "seed": seed, "steps": steps, "guidance": guidance, "batch_size": batch_size}
        )
        out = []
        for p in prompts:
            objects = parse(p)
            free = [c for c in (4, 0, 8, 2, 6, 1, 3, 5, 7) if c not in {o.cell for o in objects}]
            objects = [replace(o, cell=free.pop(0)) if o.cell is None else o for o in objects]  # any cell is right
            if self.edit is not None:
                objects = self.edit(objects)
            rgb, _ = render(objects, self.image_size)
            out.append(to_pil(rgb))
        return out


class BlankPipeline:
    """Returns black images."""

    def __init__(self, image_size: int = 32) -> None:
        self.image_size = image_size

    def generate(self, prompts: list[str], **kwargs: Any) -> list[Image.Image]:
        return [Image.new("RGB", (self.image_size, self.image_size)) for _ in prompts]


def next_colour(colour: str) -> str:
    return COLOURS[(COLOURS.index(colour) + 1) % len(COLOURS)]


def next_shape(shape: str) -> str:
    return SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)]
