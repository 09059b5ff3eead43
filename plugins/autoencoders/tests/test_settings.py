"""How kl-autoencoder settings resolve the depth, and the errors for bad ones."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modiff.testing import build_one
from modiff_autoencoders.config import KLAutoencoderSettings


@pytest.mark.parametrize(
    ("params", "channels", "f"),
    [
        ({}, [32, 64, 64], 4),
        ({"downscale": 1}, [32], 1),
        ({"downscale": 2}, [32, 64], 2),
        ({"downscale": 8}, [32, 64, 64, 64], 8),
        ({"channels": [16, 32]}, [16, 32], 2),
        ({"channels": [16, 32, 32], "downscale": 4}, [16, 32, 32], 4),
    ],
)
def test_depth_from_channels_or_downscale(params: dict[str, Any], channels: list[int], f: int) -> None:
    s = KLAutoencoderSettings(**params)
    assert s.level_channels == channels
    assert s.resolved_downscale == f


def test_built_encoder_reports_the_resolved_downscale() -> None:
    e = build_one("encoder", "kl-autoencoder", {"downscale": 8, "norm_num_groups": 8})
    assert e.downscale == 8
    assert len(e.encoder.down_blocks) == 4


def test_channels_and_downscale_that_disagree_name_both() -> None:
    with pytest.raises(ValidationError) as info:
        KLAutoencoderSettings(channels=[32, 64, 64], downscale=8)
    message = str(info.value)
    assert "[32, 64, 64]" in message and "downscale 4" in message and "downscale = 8" in message
    assert "give 4 widths" in message


@pytest.mark.parametrize("f", [0, 3, 6, 32, -2])
def test_unsupported_downscale(f: int) -> None:
    with pytest.raises(ValidationError, match=f"downscale = {f} is not supported"):
        KLAutoencoderSettings(downscale=f)


def test_groups_must_divide_every_width() -> None:
    with pytest.raises(ValidationError, match=r"norm_num_groups = 8 does not divide the widths \[12\]"):
        KLAutoencoderSettings(channels=[16, 12], norm_num_groups=8)


def test_empty_channels_and_unknown_keys_are_errors() -> None:
    with pytest.raises(ValidationError, match="no level"):
        KLAutoencoderSettings(channels=[])
    with pytest.raises(ValidationError, match="latent_chanels"):
        KLAutoencoderSettings(latent_chanels=4)  # type: ignore[call-arg]


@settings(max_examples=20, deadline=None)
@given(levels=st.integers(1, 5), width=st.sampled_from([4, 8, 16]))
def test_any_consistent_pair_is_accepted(levels: int, width: int) -> None:
    channels = [width] * levels
    s = KLAutoencoderSettings(channels=channels, downscale=2 ** (levels - 1), norm_num_groups=4)
    assert s.resolved_downscale == 2 ** (levels - 1)
