"""Shared fixtures of the conditioner tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run each test on one thread, then restore the setting.

    The networks here are tiny: a second OpenMP thread gains nothing, and on a
    loaded 2-core machine the synchronisation between threads made single
    forward passes 10-100x slower than on one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
