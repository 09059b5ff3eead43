"""The training side of the schedule where the timesteps live: no trip to the host.

The training loop hands ``add_noise``, ``training_target`` and ``loss_weight``
timesteps on the GPU at every step. Looking ``alpha_bar`` up on the CPU would
copy them to the host and wait for the GPU each time; the lookup runs on their
device instead. On a CPU these tests use the ``meta`` device (shapes without
data: any copy to the host fails there) and compare the device path's numbers
with the CPU path's.
"""

from __future__ import annotations

import pytest
import torch

from modiff.testing.devices import host_syncs
from modiff_schedulers.scheduler import build

SETTINGS = [
    {},
    {"prediction_type": "v_prediction", "loss_weighting": "min-snr"},
    {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2"},
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_training_side_stays_on_the_timesteps_device(settings: dict) -> None:
    s = build("ddim", **settings)
    x0, noise = torch.randn(3, 4, 2, 2, device="meta"), torch.randn(3, 4, 2, 2, device="meta")
    t = torch.tensor([0, 500, 999], device="meta")
    for out in (s.add_noise(x0, noise, t), s.training_target(x0, noise, t), s.loss_weight(t)):
        assert out.device.type == "meta"
    assert s.add_noise(x0, noise, t).shape == x0.shape and s.loss_weight(t).shape == (3,)


@pytest.mark.parametrize("settings", SETTINGS)
def test_device_lookup_gives_the_cpu_numbers_without_host_reads(settings: dict) -> None:
    s = build("ddim", **settings)
    n = s.num_train_timesteps
    integral = torch.tensor([0, 1, 10, 500, n - 2, n - 1])
    fractional = torch.tensor([0.25, 10.5, 998.75, 3.0])
    for t in (integral, fractional, integral.float()):
        with host_syncs() as syncs:
            got = s._alpha_bar_on_device(t)
        assert not syncs, syncs
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, s.alpha_bar_at(t), rtol=0, atol=1e-15)


def test_device_lookup_rejects_timesteps_out_of_range() -> None:
    s = build("ddim")
    for bad in (torch.tensor([-1.0]), torch.tensor([1000.0]), torch.tensor([float("nan")])):
        with pytest.raises(RuntimeError, match=r"timesteps must lie in \[0, 999\]"):
            s._alpha_bar_on_device(bad)
