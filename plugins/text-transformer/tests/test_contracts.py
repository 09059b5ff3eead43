"""The text transformer against the text-embedder contract of modiff.testing."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from modiff import UnknownWordWarning
from modiff.testing.contracts import TextEmbedderContract

COLOURS = ["red", "green", "blue", "yellow", "purple", "cyan"]
SHAPES = ["circle", "square", "triangle"]
PLACES = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]


def captions(n: int = 300) -> list[str]:
    """Templated captions like the shapes world's (one and two objects), deterministic."""
    out = []
    for i in range(n):
        c, s, p = COLOURS[(i * 7) % 6], SHAPES[(i * 5) % 3], PLACES[(i * 11) % 9]
        c2, s2, p2 = COLOURS[(i * 5 + 1) % 6], SHAPES[(i * 7 + 1) % 3], PLACES[(i * 11 + 4) % 9]
        one = [f"a {c} {s} in the {p}", f"{c} {s}, {p}", f"{p}: a {c} {s}"][i % 3]
        out.append(one if i % 2 else f"{one} and a {c2} {s2} at the {p2}")
    return out


CAPTIONS = captions()


class TestTextTransformerContract(TextEmbedderContract):
    """Two bidirectional layers over a vocabulary fitted on captions; trained jointly."""

    plugin = "transformer"
    settings: ClassVar[dict[str, Any]] = {"width": 32, "depth": 2, "heads": 4, "max_tokens": 24}
    pads_to_longest = True

    def prepare(self, component: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownWordWarning)
            component.fit(CAPTIONS)
        return component


class TestTextTransformerStartPooledContract(TestTextTransformerContract):
    """The pooled vector is the start token's output; one layer, one head."""

    settings: ClassVar[dict[str, Any]] = {"width": 16, "depth": 1, "heads": 1, "pooled": "start", "max_tokens": 8}


class TestTextTransformerNoLayersContract(TestTextTransformerContract):
    """depth = 0: learned word and position vectors only (still trained jointly)."""

    settings: ClassVar[dict[str, Any]] = {"width": 16, "depth": 0}


class TestTextTransformerLayoutPretextContract(TestTextTransformerContract):
    """With the layout pretext's decoder (a stage of its own before the denoiser's)."""

    settings: ClassVar[dict[str, Any]] = {"width": 32, "depth": 2, "heads": 4, "max_tokens": 24,
                                          "pretext": "layout", "pretext_grid": 4}

    def prepare(self, component: Any) -> Any:
        component = super().prepare(component)
        component.finish_training([])  # prepared = after its stage (the contract does not train it)
        return component
