"""The KL autoencoder's training step reads nothing back to the host.

``last_losses`` keeps the loss terms as detached tensors: turning them into
Python floats at every step would make the host wait for the GPU once per
step (twice, in fact), and only the logging needs them as numbers.
"""

from __future__ import annotations

import torch

from modiff.protocols import Batch
from modiff.testing import build_one
from modiff.testing.devices import host_syncs


def test_training_loss_makes_no_host_read() -> None:
    encoder = build_one("encoder", "kl-autoencoder", {"channels": [8, 8], "norm_num_groups": 4})
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with host_syncs(factories=False) as syncs:
        loss = encoder.training_loss(Batch(images, ["a", "b"]))
    assert not syncs, syncs
    assert set(encoder.last_losses) == {"reconstruction", "kl"}
    parts = {k: float(v) for k, v in encoder.last_losses.items()}
    assert parts["reconstruction"] > 0 and parts["kl"] >= 0
    torch.testing.assert_close(float(loss.detach()), parts["reconstruction"] + encoder.settings.kl_weight * parts["kl"])
