"""Contract for :class:`modiff.protocols.Scheduler`.

Everything here is measured through the protocol alone, so any scheduler
plugin can be held to it: the noise schedule is read back from ``add_noise``
(``a(t) = add_noise(1, 0, t)``, ``s(t) = add_noise(0, 1, t)``), and the
"oracle" model that knows the clean sample uses exactly those coefficients.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ...noise import generators
from ...plugins import registry
from ...protocols import ModelFn, Scheduler
from .base import CONTRACT_SETTINGS as _BASE_SETTINGS
from .base import Contract
from .checks import DeviceCheck, global_random_state_unchanged

#: The prediction types the protocol knows.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

#: The contract's properties run once per subclass (one per sampler), which
#: Hypothesis flags as "differing executors"; examples are derandomized and
#: never replayed from a database, so that check does not apply.
CONTRACT_SETTINGS = hsettings(
    _BASE_SETTINGS,
    suppress_health_check=[*_BASE_SETTINGS.suppress_health_check, HealthCheck.differing_executors],
)


def damped_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for a trained network: depends on x and t, bounded."""
    return torch.tanh(x) * 0.5 + 0.001 * t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def schedule_coefficients(s: Scheduler, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a(t), s(t))`` float64 ``[B]`` such that ``add_noise(x0, n, t) = a x0 + s n``."""
    ones = torch.ones(t.shape[0], 1, dtype=torch.float64)
    zeros = torch.zeros_like(ones)
    return s.add_noise(ones, zeros, t)[:, 0], s.add_noise(zeros, ones, t)[:, 0]


def oracle_model(s: Scheduler, x0: torch.Tensor) -> ModelFn:
    """A model that returns the exact target for the clean sample ``x0``:
    the noise that, with ``x0``, explains ``x_t`` at ``t`` under the
    scheduler's own ``add_noise``."""

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sd = schedule_coefficients(s, t)
        shape = (-1, *([1] * (x_t.dim() - 1)))
        a, sd = a.to(x_t.dtype).view(shape), sd.to(x_t.dtype).view(shape)
        eps = (x_t - a * x0) / sd
        if s.prediction_type == "epsilon":
            return eps
        if s.prediction_type == "sample":
            return x0.expand_as(x_t)
        return a * eps - sd * x0

    return model_fn


class SchedulerContract(Contract):
    """Every scheduler: shapes, finiteness, purity, determinism, batch
    independence, and the properties of a variance-preserving noise schedule;
    for every prediction type its settings accept, the training target and
    (deterministic samplers) the exact-model round trip; random draws only
    from the generators it is given, in training as in sampling; dtypes and
    devices that follow the inputs.

    ``prediction_types()`` reads the accepted types from the settings model;
    override it if your settings accept a type your sampler cannot use.
    """

    role: ClassVar[str] = "scheduler"
    #: Whether ``sample`` draws random numbers (ancestral and SDE samplers).
    stochastic: ClassVar[bool] = False
    #: Small and a multiple of the CPU's SIMD width per sample, so that the
    #: batch-of-N comparison can demand bit-identical results.
    shape: ClassVar[tuple[int, ...]] = (3, 2, 4, 4)
    #: The noise left at the first timestep: add_noise(x0, n, t=0) may differ
    #: from x0 by at most (1 - a(0))|x0| + s(0)|n| with s(0) below this bound.
    first_step_noise: ClassVar[float] = 0.1
    #: Max |x0 - sample(oracle)| (float64) for deterministic samplers; sigma
    #: samplers evaluate fractional timesteps, so allow interpolation error.
    oracle_atol: ClassVar[float] = 1e-4

    def prediction_types(self) -> list[str]:
        """Every prediction type the component's settings accept next to ``settings``.

        Read from the settings model: each of the protocol's types that
        validates (a validator may refuse one in some configurations, e.g.
        epsilon at zero terminal SNR) is tested; a model without a
        ``prediction_type`` field gives the built component's one type.
        """
        reg = (self.registry() or registry()).lookup(self.role, self.plugin)
        if "prediction_type" not in getattr(reg.settings_model, "model_fields", {}):
            return [self.build().prediction_type]
        accepted = []
        for kind in PREDICTION_TYPES:
            try:
                reg.validate({**self.settings, "prediction_type": kind})
            except ValueError:  # pydantic's ValidationError is a ValueError
                continue
            accepted.append(kind)
        return accepted

    def build_predicting(self, kind: str) -> Scheduler:
        """A fresh scheduler of ``settings`` with ``prediction_type = kind``."""
        s = self.build()
        return s if s.prediction_type == kind else self.build(prediction_type=kind)

    def test_is_a_scheduler(self) -> None:
        s = self.build()
        assert isinstance(s, Scheduler)
        assert s.prediction_type in PREDICTION_TYPES
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

    def test_timestep_sampling_covers_the_range(self) -> None:
        s = self.build()
        t = s.sample_timesteps(4000, generator=torch.Generator().manual_seed(0))
        n = s.num_train_timesteps
        assert not t.is_floating_point()
        assert int(t.min()) >= 0 and int(t.max()) < n
        # training must see the whole range: every quarter of [0, T) is drawn
        counts = torch.bincount((t * 4 // n).long(), minlength=4)
        assert bool((counts > 40).all()), f"timestep draws per quarter of [0, T): {counts.tolist()}"

    # ------------------------------------------------------------------
    # The noise schedule, read through add_noise
    # ------------------------------------------------------------------

    @CONTRACT_SETTINGS
    @given(data=st.data())
    def test_add_noise_is_variance_preserving(self, data: st.DataObject) -> None:
        s = self.shared()
        t = torch.tensor(
            data.draw(st.lists(st.integers(0, s.num_train_timesteps - 1), min_size=1, max_size=5)), dtype=torch.long
        )
        a, sd = schedule_coefficients(s, t)
        torch.testing.assert_close(a**2 + sd**2, torch.ones_like(a), rtol=0, atol=1e-6)
        assert bool((a >= 0).all()) and bool((sd >= 0).all())

    @CONTRACT_SETTINGS
    @given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.01, 100.0))
    def test_add_noise_at_the_first_timestep_is_nearly_x0(self, seed: int, scale: float) -> None:
        """At t = 0, add_noise returns x0 up to the schedule's own first-step
        noise: |x_0 - x0| <= (1 - a(0)) |x0| + s(0) |n| (+ float64 rounding),
        and s(0) itself is small (``first_step_noise``)."""
        s = self.shared()
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn(self.shape, generator=g, dtype=torch.float64) * scale
        n = torch.randn(self.shape, generator=g, dtype=torch.float64)
        t = torch.zeros(self.shape[0], dtype=torch.long)
        a, sd = schedule_coefficients(s, t[:1])
        assert float(sd) <= self.first_step_noise, f"s(0) = {float(sd):.3g}: the first timestep is already noisy"
        bound = (1 - a) * x0.abs() + sd * n.abs() + 1e-12 * (1 + x0.abs())
        assert bool(((s.add_noise(x0, n, t) - x0).abs() <= bound).all())

    def test_snr_strictly_decreases(self) -> None:
        s = self.build()
        t = torch.arange(s.num_train_timesteps)
        a, sd = schedule_coefficients(s, t)
        snr = a**2 / sd**2
        assert bool(torch.isfinite(snr[:-1]).all())
        falls = snr[1:] < snr[:-1]
        assert bool(falls.all()), f"SNR does not fall at t = {torch.nonzero(~falls)[:5, 0].add(1).tolist()}"

    @CONTRACT_SETTINGS
    @given(seed=st.integers(0, 2**31 - 1))
    def test_training_target_is_consistent_with_add_noise(self, seed: int) -> None:
        """The target and x_t determine x0 exactly: the prediction types mean what they say."""
        s = self.shared()
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn(self.shape, generator=g, dtype=torch.float64)
        n = torch.randn(self.shape, generator=g, dtype=torch.float64)
        t = s.sample_timesteps(self.shape[0], generator=g)
        x_t, target = s.add_noise(x0, n, t), s.training_target(x0, n, t)
        a, sd = (c.view(-1, *([1] * (x0.dim() - 1))) for c in schedule_coefficients(s, t))
        expected = {"epsilon": n, "sample": x0, "v_prediction": a * n - sd * x0}[s.prediction_type]
        torch.testing.assert_close(target, expected, rtol=1e-6, atol=1e-6)
        if s.prediction_type == "v_prediction":
            torch.testing.assert_close(a * x_t - sd * target, x0, rtol=1e-6, atol=1e-6)

    def test_every_prediction_type_has_the_right_target(self) -> None:
        """Each prediction type the settings accept, not only the configured one: the
        target is the noise, the clean sample, or ``v = a n - s x0``."""
        kinds = self.prediction_types()
        assert kinds, "the settings accept none of the prediction types epsilon, v_prediction, sample"
        g = torch.Generator().manual_seed(11)
        x0 = torch.randn(self.shape, generator=g, dtype=torch.float64)
        n = torch.randn(self.shape, generator=g, dtype=torch.float64)
        for kind in kinds:
            s = self.build_predicting(kind)
            assert s.prediction_type == kind, (
                f"settings prediction_type = {kind!r} built a {s.prediction_type!r} scheduler"
            )
            t = s.sample_timesteps(self.shape[0], generator=torch.Generator().manual_seed(3))
            a, sd = (c.view(-1, *([1] * (x0.dim() - 1))) for c in schedule_coefficients(s, t))
            expected = {"epsilon": n, "sample": x0, "v_prediction": a * n - sd * x0}[kind]
            target = s.training_target(x0, n, t)
            assert torch.allclose(target, expected, rtol=1e-6, atol=1e-6), (
                f"prediction_type = {kind!r}: training_target is not "
                + {"epsilon": "the noise", "sample": "x0", "v_prediction": "a(t) * noise - s(t) * x0"}[kind]
            )

    def test_a_training_step_draws_only_from_its_generator(self) -> None:
        """What a training step asks of the scheduler, twice from equal generators: equal
        timesteps, targets and weights whatever the global random state, nothing drawn from
        it, and other seeds give other timesteps."""
        s = self.build()

        def step(seed: int, global_seed: int) -> tuple[torch.Tensor, ...]:
            torch.manual_seed(global_seed)
            g = torch.Generator().manual_seed(seed)
            x0 = torch.randn(self.shape, generator=g)
            n = torch.randn(self.shape, generator=g)
            with global_random_state_unchanged(
                "a training step (sample_timesteps, add_noise, training_target, loss_weight)"
            ):
                t = s.sample_timesteps(self.shape[0] * 8, generator=g)[: self.shape[0]]
                return t, s.add_noise(x0, n, t), s.training_target(x0, n, t), s.loss_weight(t)

        first, again = step(5, 1), step(5, 2)
        for name, a, b in zip(("sample_timesteps", "add_noise", "training_target", "loss_weight"), first, again):
            assert torch.equal(a, b), f"{name} differs between two training steps with equal generators"
        many = [s.sample_timesteps(64, generator=torch.Generator().manual_seed(seed)) for seed in (5, 6)]
        assert not torch.equal(*many), "sample_timesteps gives the same draws for other generator seeds"

    def test_dtypes_follow_the_inputs(self) -> None:
        """float32 in, float32 out; float64 in, float64 out: training side and sampling."""
        s = self.build()
        t = s.sample_timesteps(self.shape[0], generator=torch.Generator().manual_seed(0))
        assert not t.is_floating_point(), f"sample_timesteps gave {t.dtype}; timesteps for training are integers"
        for dtype in (torch.float32, torch.float64):
            g = torch.Generator().manual_seed(1)
            x0 = torch.randn(self.shape, generator=g, dtype=dtype)
            n = torch.randn(self.shape, generator=g, dtype=dtype)
            assert s.add_noise(x0, n, t).dtype == dtype, f"add_noise turned {dtype} into {s.add_noise(x0, n, t).dtype}"
            target = s.training_target(x0, n, t)
            assert target.dtype == dtype, f"training_target turned {dtype} into {target.dtype}"
            out = s.sample(damped_model, n, 3, generator=generators([1, 2, 3]))
            assert out.dtype == dtype, f"sample turned {dtype} noise into {out.dtype}"

    def test_outputs_follow_the_device(self) -> None:
        """Timesteps land on ``device=``, and samples, noised inputs, targets and weights
        on their inputs' device (a GPU where there is one, else torch's meta device)."""
        s = self.build()
        check = DeviceCheck()
        device = check.device
        g = torch.Generator().manual_seed(0)
        t = check.check(
            "sample_timesteps(device=...)", lambda: s.sample_timesteps(self.shape[0], generator=g, device=device)
        )
        if t is None:
            t = s.sample_timesteps(self.shape[0], generator=g).to(device)
        noise = torch.randn(self.shape, generator=g).to(device)
        x0 = torch.randn(self.shape, generator=g).to(device)
        check.check("sample", lambda: s.sample(damped_model, noise, 3, generator=generators([1, 2, 3])))
        check.check("add_noise", lambda: s.add_noise(x0, noise, t))
        check.check("training_target", lambda: s.training_target(x0, noise, t))
        check.check("loss_weight", lambda: s.loss_weight(t))
        check.finish()

    # ------------------------------------------------------------------
    # Sampling
    # ------------------------------------------------------------------

    @CONTRACT_SETTINGS
    @given(steps=st.integers(1, 30))
    def test_sample_is_finite_and_shaped(self, steps: int) -> None:
        s = self.shared()
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(1))
        out = s.sample(damped_model, noise, steps, generator=generators([1, 2, 3]))
        assert out.shape == noise.shape and out.dtype == noise.dtype
        assert bool(torch.isfinite(out).all())
        ts = s.timesteps(steps)
        assert ts.dim() == 1 and len(ts) >= 1

    @CONTRACT_SETTINGS
    @given(data=st.data())
    def test_finite_for_any_step_count(self, data: st.DataObject) -> None:
        """No NaN or Inf for any number of steps from 1 to num_train_timesteps."""
        s = self.shared()
        n = s.num_train_timesteps
        steps = data.draw(st.one_of(st.sampled_from([1, 2, n - 1, n]), st.integers(1, n)), label="steps")
        noise = torch.randn(1, 2, 2, 2, generator=torch.Generator().manual_seed(steps))
        out = s.sample(damped_model, noise, steps, generator=generators([steps]))
        assert bool(torch.isfinite(out).all()), f"non-finite output with {steps} steps"
        ts = s.timesteps(steps)
        assert len(ts) == steps, f"timesteps({steps}) has {len(ts)} entries"
        assert bool((ts >= 0).all()) and bool((ts <= n - 1).all())
        assert bool((ts[1:] <= ts[:-1]).all()), "timesteps must go from noisy to clean"

    @CONTRACT_SETTINGS
    @given(steps=st.sampled_from([1, 2, 3, 10, 25]), seed=st.integers(0, 2**31 - 1))
    def test_oracle_model_recovers_x0(self, steps: int, seed: int) -> None:
        """A model that returns the exact target for x0 leads a deterministic
        sampler to x0 (within ``oracle_atol``, float64)."""
        if self.stochastic:
            pytest.skip("a stochastic sampler adds fresh noise: an exact model does not lead it to x0")
        s = self.shared()
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn(self.shape, generator=g, dtype=torch.float64).clamp(-1, 1)
        noise = torch.randn(self.shape, generator=g, dtype=torch.float64)
        out = s.sample(oracle_model(s, x0), noise, steps)
        err = float((out - x0).abs().max())
        assert err <= self.oracle_atol, f"{steps} steps: |sample - x0| = {err:.3g}"

    def test_oracle_model_recovers_x0_for_every_prediction_type(self) -> None:
        """The sampler reads a prediction as the type the settings say, for each type they accept."""
        if self.stochastic:
            pytest.skip("a stochastic sampler adds fresh noise: an exact model does not lead it to x0")
        g = torch.Generator().manual_seed(12)
        x0 = torch.randn(self.shape, generator=g, dtype=torch.float64).clamp(-1, 1)
        noise = torch.randn(self.shape, generator=g, dtype=torch.float64)
        for kind in self.prediction_types():
            s = self.build_predicting(kind)
            for steps in (1, 4):
                err = float((s.sample(oracle_model(s, x0), noise, steps) - x0).abs().max())
                assert err <= self.oracle_atol, f"prediction_type = {kind!r}, {steps} steps: |sample - x0| = {err:.3g}"

    @CONTRACT_SETTINGS
    @given(steps=st.integers(2, 40), data=st.data())
    def test_img2img_from_add_noise_recovers_x0(self, steps: int, data: st.DataObject) -> None:
        """``start_step > 0`` continues from ``add_noise`` at ``timesteps(steps)[start_step]``."""
        if self.stochastic:
            pytest.skip("a stochastic sampler adds fresh noise: an exact model does not lead it to x0")
        s = self.shared()
        start = data.draw(st.integers(1, steps - 1), label="start_step")
        g = torch.Generator().manual_seed(steps * 1000 + start)
        x0 = torch.randn(self.shape, generator=g, dtype=torch.float64).clamp(-1, 1)
        n = torch.randn(self.shape, generator=g, dtype=torch.float64)
        t = s.timesteps(steps)[start].expand(self.shape[0])
        seen: list[int] = []
        out = s.sample(
            oracle_model(s, x0), s.add_noise(x0, n, t), steps, start_step=start,
            callback=lambda i, t, x, x0_: seen.append(i),
        )
        assert seen and seen[0] == start, f"callback step indices {seen} should start at start_step = {start}"
        err = float((out - x0).abs().max())
        assert err <= self.oracle_atol, f"start_step {start} of {steps}: |sample - x0| = {err:.3g}"

    def test_sample_is_pure_and_deterministic(self) -> None:
        s = self.build()
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(2))
        kept = noise.clone()
        torch.manual_seed(1)
        a = s.sample(damped_model, noise, 8, generator=generators([5, 6, 7]))
        torch.manual_seed(2)
        with global_random_state_unchanged("sample(generator=[...])"):
            b = s.sample(damped_model, noise, 8, generator=generators([5, 6, 7]))
        assert torch.equal(noise, kept), "sample must not modify its input"
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    @CONTRACT_SETTINGS
    @given(steps=st.integers(1, 12), seeds=st.lists(st.integers(0, 2**31 - 1), min_size=3, max_size=3))
    def test_batch_of_n_equals_n_single_runs(self, steps: int, seeds: list[int]) -> None:
        """Sample i of a batch is bit-identical to the same noise and seed run alone."""
        s = self.shared()
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(seeds[0]))
        batch = s.sample(damped_model, noise, steps, generator=generators(seeds))
        for i, seed in enumerate(seeds):
            alone = s.sample(damped_model, noise[i : i + 1], steps, generator=generators([seed]))
            assert torch.equal(batch[i : i + 1], alone), f"sample {i} differs from its single run ({steps} steps)"

    def test_generators_decide_the_noise(self) -> None:
        """Stochastic samplers: other seeds give other samples; deterministic ones ignore generators."""
        s = self.build()
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(3))
        a = s.sample(damped_model, noise, 6, generator=generators([1, 2, 3]))
        b = s.sample(damped_model, noise, 6, generator=generators([4, 5, 6]))
        assert torch.equal(a, b) != self.stochastic

    def test_callback_sees_every_step(self) -> None:
        s = self.build()
        seen: list[int] = []
        noise = torch.randn(self.shape, generator=torch.Generator().manual_seed(4))
        s.sample(damped_model, noise, 5, generator=generators([1, 2, 3]), callback=lambda i, t, x, x0: seen.append(i))
        assert seen == list(range(len(seen))) and len(seen) >= 5
