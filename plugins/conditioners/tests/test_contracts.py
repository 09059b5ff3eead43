"""Every conditioner passes the Conditioner contract, with each null kind and with an image context."""

from __future__ import annotations

from typing import Any, ClassVar

from modiff.testing.contracts import ConditionerContract


class TestCrossAttention(ConditionerContract):
    plugin = "cross-attention"
    settings: ClassVar[dict[str, Any]] = {"context_dim": 12}


class TestCrossAttentionPassThroughZeros(ConditionerContract):
    """No projection (SD feeds CLIP's hidden states directly) and a zero null."""

    plugin = "cross-attention"
    settings: ClassVar[dict[str, Any]] = {"projection": False, "null": "zeros"}


class TestConcat(ConditionerContract):
    plugin = "concat"
    settings: ClassVar[dict[str, Any]] = {"channels": 3}


class TestConcatWithImageContext(ConditionerContract):
    plugin = "concat"
    settings: ClassVar[dict[str, Any]] = {"channels": 2, "null": "zeros", "image_context_channels": 3}
    image_context_channels = 3


class TestVector(ConditionerContract):
    plugin = "vector"
    settings: ClassVar[dict[str, Any]] = {"vector_dim": 10}


class TestHybrid(ConditionerContract):
    plugin = "hybrid"
    settings: ClassVar[dict[str, Any]] = {"channels": 2, "context_dim": 8, "image_context_channels": 1}
    image_context_channels = 1


class TestNone(ConditionerContract):
    plugin = "none"
    uses_text = False


class TestNoneWithImageContext(ConditionerContract):
    plugin = "none"
    settings: ClassVar[dict[str, Any]] = {"image_context_channels": 2}
    uses_text = False
    image_context_channels = 2
