"""The Encoder contract, for both encoders of this plugin."""

from __future__ import annotations

from typing import Any, ClassVar

from modiff.testing.contracts import EncoderContract


class TestIdentityContract(EncoderContract):
    plugin = "identity"
    exact = True


class TestKLAutoencoderContract(EncoderContract):
    """f = 4 with two residual blocks per level and attention: every code path."""

    plugin = "kl-autoencoder"
    settings: ClassVar[dict[str, Any]] = {
        "channels": [8, 16, 16],
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 4,
    }


class TestKLAutoencoderSlicedContract(EncoderContract):
    """f = 2 with batch slicing on: slicing must not mix or reorder images."""

    plugin = "kl-autoencoder"
    settings: ClassVar[dict[str, Any]] = {
        "downscale": 2,
        "channels": [8, 8],
        "latent_channels": 3,
        "norm_num_groups": 4,
        "slice_size": 2,
    }


class TestKLAutoencoderSamplingContract(EncoderContract):
    """``sample_posterior = true``: each latent a draw from its own generator, which the
    core relies on when it encodes every step instead of caching (sliced, to check that
    slicing keeps each image with its generator)."""

    plugin = "kl-autoencoder"
    settings: ClassVar[dict[str, Any]] = {
        "downscale": 2,
        "channels": [8, 8],
        "latent_channels": 3,
        "norm_num_groups": 4,
        "slice_size": 2,
        "sample_posterior": True,
    }
