"""``dit`` passes modiff's Denoiser contract for every kind of conditioning and both heads."""

from __future__ import annotations

from typing import Any, ClassVar

from modiff.protocols import ConditioningSpec, DenoiserSpec
from modiff.testing.contracts import DenoiserContract

TINY: dict[str, Any] = {"patch_size": 2, "width": 16, "depth": 1, "heads": 2, "frequency_dim": 16}


class TestDiTContextOnly(DenoiserContract):
    """Cross-attention style: the text arrives only as a context."""

    plugin = "dit"
    settings: ClassVar[dict[str, Any]] = TINY
    spec = DenoiserSpec(in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(0, 16, None))
    size_multiple = 2


class TestDiTVectorOnly(DenoiserContract):
    """Class-conditional style: the text arrives only as a vector, through adaLN."""

    plugin = "dit"
    settings: ClassVar[dict[str, Any]] = {**TINY, "pos_embed": "learned"}
    spec = DenoiserSpec(in_channels=3, out_channels=3, sample_size=8, conditioning=ConditioningSpec(0, None, 6))
    size_multiple = 4  # learned positions resized to other grids


class TestDiTConcat(DenoiserContract):
    """Concatenated channels plus context and vector, with patch size 4 and two blocks."""

    plugin = "dit"
    settings: ClassVar[dict[str, Any]] = {**TINY, "patch_size": 4, "depth": 2, "mlp_ratio": 2.0}
    spec = DenoiserSpec(in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(3, 10, 6))
    size_multiple = 4


class TestDiTSegmentation(DenoiserContract):
    """Segmentation head: class logits, and the timestep is not an input at all."""

    plugin = "dit"
    settings: ClassVar[dict[str, Any]] = TINY
    spec = DenoiserSpec(
        in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(0, 8, 6), num_classes=5
    )
    segmentation = True  # head "auto" follows [run] task = "segmentation"
    size_multiple = 2
