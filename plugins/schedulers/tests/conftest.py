"""Shared fixtures of the scheduler tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# The diffusers bridge lives next to the tests (never in the plugin).
sys.path.insert(0, str(Path(__file__).parent))


def smooth_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A stand-in network: mixes channels, saturates, and depends on t, so a
    wrong timestep or a wrong input scale changes its output."""
    tt = t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return 0.8 * x + 0.2 * torch.tanh(x.roll(1, dims=1)) + 0.05 * torch.cos(tt / 137.0)


@pytest.fixture
def model_fn():
    return smooth_model


@pytest.fixture
def diffusers_noise(monkeypatch: pytest.MonkeyPatch):
    """diffusers' schedulers drawing their noise exactly like modiff, and LMS
    integrating with an exact rule instead of scipy (see _diffusers_reference)."""
    import _diffusers_reference as ref

    ref.patch_randn(monkeypatch)
    ref.fast_lms_quadrature(monkeypatch)
    return ref
