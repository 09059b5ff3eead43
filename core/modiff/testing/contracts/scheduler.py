"""Contract for :class:`modiff.protocols.Scheduler`."""

from __future__ import annotations

from typing import ClassVar

import torch
from hypothesis import given
from hypothesis import strategies as st

from ...noise import generators
from ...protocols import Scheduler
from .base import CONTRACT_SETTINGS, Contract


def damped_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for a trained network: depends on x and t, bounded."""
    return torch.tanh(x) * 0.5 + 0.001 * t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


class SchedulerContract(Contract):
    """Every scheduler: shapes, finiteness, purity, determinism and batch independence."""

    role: ClassVar[str] = "scheduler"
    #: Whether ``sample`` draws random numbers (ancestral and SDE samplers).
    stochastic: ClassVar[bool] = False
    shape: ClassVar[tuple[int, ...]] = (3, 2, 4, 4)

    def test_is_a_scheduler(self) -> None:
        s = self.build()
        assert isinstance(s, Scheduler)
        assert s.prediction_type in {"epsilon", "v_prediction", "sample"}
        assert s.num_train_timesteps > 0

    def test_training_side_shapes(self) -> None:
        s = self.build()
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(self.shape, generator=g)
        noise = torch.randn(self.shape, generator=g)
        t = s.sample_timesteps(self.shape[0], generator=g)
        assert t.shape == (self.shape[0],)
        assert int(t.min()) >= 0 and int(t.max()) < s.num_train_timesteps
        assert s.add_noise(x0, noise, t).shape == x0.shape
        assert s.training_target(x0, noise, t).shape == x0.shape
        w = s.loss_weight(t)
        assert w.shape == (self.shape[0],) and bool(torch.isfinite(w).all()) and bool((w >= 0).all())

    @CONTRACT_SETTINGS
    @given(steps=st.integers(1, 30))
    def test_sample_is_finite_and_shaped(self, steps: int) -> None:
        s = self.build()
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(1))
        out = s.sample(damped_model, noise, steps, generator=generators([1, 2, 3]))
        assert out.shape == noise.shape
        assert bool(torch.isfinite(out).all())
        ts = s.timesteps(steps)
        assert ts.dim() == 1 and len(ts) >= 1

    def test_sample_is_pure_and_deterministic(self) -> None:
        s = self.build()
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(2))
        kept = noise.clone()
        a = s.sample(damped_model, noise, 8, generator=generators([5, 6, 7]))
        b = s.sample(damped_model, noise, 8, generator=generators([5, 6, 7]))
        assert torch.equal(noise, kept), "sample must not modify its input"
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    def test_batch_of_n_equals_n_single_runs(self) -> None:
        s = self.build()
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(3))
        seeds = [11, 12, 13]
        batch = s.sample(damped_model, noise, 6, generator=generators(seeds))
        for i, seed in enumerate(seeds):
            alone = s.sample(damped_model, noise[i : i + 1], 6, generator=generators([seed]))
            torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-5, atol=self.atol)

    def test_callback_sees_every_step(self) -> None:
        s = self.build()
        seen: list[int] = []
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(4))
        s.sample(damped_model, noise, 5, generator=generators([1, 2, 3]), callback=lambda i, t, x, x0: seen.append(i))
        assert seen == list(range(len(seen))) and len(seen) >= 5
