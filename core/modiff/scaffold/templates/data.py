"""Skeleton of a dataset: procedurally drawn striped images with captions."""

from __future__ import annotations

from . import RoleTemplate

SETTINGS = r'''"""Settings of ``$name`` (pydantic only: ``modiff plugins`` imports this module)."""

from __future__ import annotations

from pydantic import Field

import modiff


class $settings_class(modiff.ComponentSettings):
    """The keys a ``[data]`` table with ``plugin = "$name"`` accepts."""

    image_size: int = Field(32, ge=8, description="Side of the square images, in pixels.")
    size: int = Field(1000, ge=1, description="Number of examples.")
    seed: int = Field(0, description="Another seed draws another dataset.")
'''

COMPONENT = r'''"""Striped images: a dataset that needs no files and still has something to learn.

Example ``i`` is a square image of stripes of one colour on black, running
horizontally or vertically, thin or wide, captioned accordingly ("wide red
vertical stripes"). Everything about it is a pure function of
``(seed, i)``: the dataset is deterministic by index, and pickles cheaply
(data-loader worker processes receive a pickled copy).
"""

from __future__ import annotations

import random

import torch

import modiff
from modiff.protocols import Example

from .settings import $settings_class

#: Colour name -> RGB in [-1, 1].
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
    "white": (1.0, 1.0, 1.0),
}
DIRECTIONS = ("horizontal", "vertical")
#: Stripe width name -> stripes per image.
WIDTHS = {"wide": 2, "thin": 4}


class StripesDataset:
    num_classes = 0  # no segmentation masks

    def __init__(self, settings: $settings_class):
        self.image_size = settings.image_size
        self.size = settings.size
        self.seed = settings.seed

    def __len__(self) -> int:
        return self.size

    def draw(self, index: int) -> tuple[str, str, str]:
        """``(colour, direction, width)`` of example ``index``."""
        rng = random.Random(f"{self.seed}/{index}")  # string seeds are stable across runs
        return rng.choice(list(COLOURS)), rng.choice(DIRECTIONS), rng.choice(list(WIDTHS))

    def caption(self, index: int) -> str:
        colour, direction, width = self.draw(index)
        return f"{width} {colour} {direction} stripes"

    def __getitem__(self, index: int) -> Example:
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"index out of range: the dataset has {self.size} examples")
        colour, direction, width = self.draw(index)
        n = self.image_size
        period = max(2, n // WIDTHS[width])
        on = (torch.arange(n) % period) < period // 2  # [n] bool: inside a stripe
        image = torch.full((3, n, n), -1.0)
        rgb = torch.tensor(COLOURS[colour]).view(3, 1, 1)
        if direction == "vertical":
            image[:, :, on] = rgb.expand(3, n, int(on.sum()))
        else:
            image[:, on, :] = rgb.expand(3, int(on.sum()), n)
        return Example(image, self.caption(index))

    def captions(self) -> list[str]:
        """Every caption, in index order (text embedders that fit on text read these)."""
        return [self.caption(i) for i in range(self.size)]


def build_component(settings: $settings_class, context: modiff.BuildContext) -> StripesDataset:
    return StripesDataset(settings)
'''

TESTS = r'''

class $test_class($contract):
    plugin = "$name"
    settings: ClassVar[dict[str, Any]] = {"image_size": 16, "size": 50}

    def registry(self) -> modiff.Registry:
        return REGISTRY


def test_captions_say_what_the_image_shows() -> None:
    d = ${test_class}().build()
    for i in range(20):
        example = d[i]
        rows_equal = bool((example.image == example.image[:, :1, :]).all())
        cols_equal = bool((example.image == example.image[:, :, :1]).all())
        if "vertical" in example.caption:
            assert rows_equal and not cols_equal, example.caption
        else:
            assert cols_equal and not rows_equal, example.caption


def test_seed_changes_the_dataset() -> None:
    a = ${test_class}().build()
    b = ${test_class}().build(seed=1)
    assert a.captions() != b.captions()
'''

TEMPLATE = RoleTemplate(
    role="data",
    hook="register_datasets",
    contract="DatasetContract",
    summary="striped images of several colours and directions, drawn on the fly and captioned",
    settings_class="StripesSettings",
    settings=SETTINGS,
    component=COMPONENT,
    tests=TESTS,
)
