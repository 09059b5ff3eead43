"""The UNet passes the Denoiser contract with both heads and every kind of conditioning."""

from __future__ import annotations

from typing import Any, ClassVar

from modiff.protocols import ConditioningSpec, DenoiserSpec
from modiff.testing.contracts import DenoiserContract

TINY: dict[str, Any] = {"channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "head_dim": 4}


class TestUNetCrossAttention(DenoiserContract):
    plugin = "unet"
    settings: ClassVar[dict[str, Any]] = TINY
    spec = DenoiserSpec(in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(0, 16, None))
    size_multiple = 3  # any size works: upsampling follows the skips' sizes


class TestUNetSegmentationHead(DenoiserContract):
    plugin = "unet"
    settings: ClassVar[dict[str, Any]] = {**TINY, "head": "segment"}
    spec = DenoiserSpec(
        in_channels=3, out_channels=3, sample_size=8, conditioning=ConditioningSpec(0, 12, None), num_classes=5
    )
    segmentation = True
    size_multiple = 2


class TestUNetConcatAndVector(DenoiserContract):
    """No context: transformer blocks only self-attend; text arrives as channels and a vector."""

    plugin = "unet"
    settings: ClassVar[dict[str, Any]] = {**TINY, "channels": [8, 16, 16], "attention_levels": [1]}
    spec = DenoiserSpec(in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(3, None, 6))
    size_multiple = 4


class TestUNetEverything(DenoiserContract):
    """Concat, context and vector at once, with linear projections and checkpointing."""

    plugin = "unet"
    settings: ClassVar[dict[str, Any]] = {
        **TINY,
        "use_linear_projection": True,
        "transformer_depth": 2,
        "gradient_checkpointing": True,
        "dropout": 0.1,
    }
    spec = DenoiserSpec(in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(2, 10, 6))
    size_multiple = 2


class TestUNetSegmentationWithVector(DenoiserContract):
    """Segmentation head with a conditioning vector: residual blocks get the vector, never t."""

    plugin = "unet"
    settings: ClassVar[dict[str, Any]] = {**TINY, "attention_levels": []}
    spec = DenoiserSpec(
        in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(0, 8, 6), num_classes=2
    )
    segmentation = True  # head "auto" follows [run] task = "segmentation"
    size_multiple = 2


class TestUNetAttentionPositions(DenoiserContract):
    """Position features added to every transformer block's tokens, at any input size."""

    plugin = "unet"
    settings: ClassVar[dict[str, Any]] = {**TINY, "attention_positions": True}
    spec = DenoiserSpec(in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(0, 16, None))
    size_multiple = 3
