"""The shapes world: vocabulary, scene sampling, rendering, captions, prompts.

Everything here is numpy-only (no torch), so the evaluator, tests and other
tools can draw and caption scenes cheaply. The torch dataset is
:mod:`modiff_datasets.shapes.dataset`. The numpy-backed names load on first
use, so reading settings (which validates against the vocabulary) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .captions import TEMPLATES, CaptionError, Template, caption, parse
from .world import (
    CELLS,
    COLOURS,
    MASK_CLASSES,
    NUM_CLASSES,
    PAIRS,
    PALETTE,
    SHAPES,
    SIZES,
    ShapeObject,
    cell_of,
    check_image_size,
    side,
    validate_holdout,
)

_LAZY = {
    "PromptCase": "prompts",
    "evaluation_prompts": "prompts",
    "render": "drawing",
    "stencil": "drawing",
    "Scene": "sampler",
    "SceneSampler": "sampler",
}

if TYPE_CHECKING:
    from .drawing import render, stencil
    from .prompts import PromptCase, evaluation_prompts
    from .sampler import Scene, SceneSampler


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CELLS",
    "COLOURS",
    "MASK_CLASSES",
    "NUM_CLASSES",
    "PAIRS",
    "PALETTE",
    "SHAPES",
    "SIZES",
    "TEMPLATES",
    "CaptionError",
    "PromptCase",
    "Scene",
    "SceneSampler",
    "ShapeObject",
    "Template",
    "caption",
    "cell_of",
    "check_image_size",
    "evaluation_prompts",
    "parse",
    "render",
    "side",
    "stencil",
    "validate_holdout",
]
