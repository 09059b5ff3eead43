"""Shared fixtures of the dit tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_thread(single_thread: None) -> None:
    """Every test here on one thread (tiny networks): modiff.testing's ``single_thread``."""
