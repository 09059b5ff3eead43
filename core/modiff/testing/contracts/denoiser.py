"""Contract for :class:`modiff.protocols.Denoiser`."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ...assembly import BuildContext
from ...protocols import Conditioning, ConditioningSpec, Denoiser, DenoiserSpec
from ...settings import RunSettings
from ...tasks import Segmentation, TextToImage
from .base import CONTRACT_SETTINGS, Contract
from .checks import DeviceCheck, assert_unchanged, global_random_state_unchanged, snapshot

#: The shared contract settings, plus: every subclass runs the same test
#: functions with its own ``self``, which is intended here.
SETTINGS = hsettings(
    CONTRACT_SETTINGS,
    suppress_health_check=[*CONTRACT_SETTINGS.suppress_health_check, HealthCheck.differing_executors],
)


class DenoiserContract(Contract):
    """Every denoiser: output shape over batch sizes, image sizes and token counts; batch
    independence; masked context positions do not matter; determinism; the conditioning
    it was built for is used; a segmentation head ignores ``t``; the prediction has the
    input's dtype and device; inputs are left unchanged and nothing is drawn from the
    global random state.

    Set ``spec`` to the :class:`DenoiserSpec` to build for, ``size_multiple``
    to the factor image sizes must be divisible by, and ``segmentation`` when
    the settings select a segmentation head (the prediction then has
    ``spec.num_classes`` channels and must not depend on ``t``).
    """

    role: ClassVar[str] = "denoiser"
    spec: ClassVar[DenoiserSpec] = DenoiserSpec(
        in_channels=4, out_channels=4, sample_size=8, conditioning=ConditioningSpec(0, 16, None)
    )
    size_multiple: ClassVar[int] = 4
    segmentation: ClassVar[bool] = False

    def out_channels(self) -> int:
        """Channels the prediction has: ``out_channels`` for denoising, classes for segmentation."""
        return self.spec.num_classes if self.segmentation else self.spec.out_channels

    def context(self) -> Any:
        task = Segmentation() if self.segmentation else TextToImage()
        spec = dataclasses.replace(self.spec, head=task.head)
        return BuildContext(run=RunSettings(task=task.name), task=task, denoiser_spec=spec)

    def inputs(
        self,
        batch: int,
        size: int,
        length: int = 5,
        seed: int = 0,
        lengths: list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Conditioning]:
        """Random inputs for the spec; ``lengths`` gives each row's real tokens (default: all)."""
        g = torch.Generator().manual_seed(seed)
        spec = self.spec
        x = torch.randn(batch, spec.in_channels, size, size, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g).float()
        cs = spec.conditioning
        concat = torch.randn(batch, cs.concat_channels, size, size, generator=g) if cs.concat_channels else None
        context = mask = None
        if cs.context_dim is not None:
            context = torch.randn(batch, length, cs.context_dim, generator=g)
            real = torch.tensor(lengths if lengths is not None else [length] * batch)
            mask = torch.arange(length)[None, :] < real[:, None]
        vector = torch.randn(batch, cs.vector_dim, generator=g) if cs.vector_dim is not None else None
        return x, t, Conditioning(concat, context, mask, vector)

    def perturbed(self) -> Any:
        """A fresh denoiser whose weights are moved off their initial values.

        Tests of what the prediction *depends on* use it, so that a denoiser
        that zero-initialises an output layer (a common and sensible choice)
        is judged on its wiring, not on its initial weights.
        """
        d = self.build()
        if isinstance(d, torch.nn.Module):
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                for p in d.parameters():
                    p.add_(torch.randn(p.shape, generator=g).to(p) * 0.05)
        return d

    def test_is_a_denoiser(self) -> None:
        d = self.build()
        assert isinstance(d, Denoiser)
        assert d.spec == self.context().denoiser_spec, "the denoiser's spec is the one it was built for"

    def test_output_shape(self) -> None:
        d = self.build()
        x, t, c = self.inputs(2, self.spec.sample_size)
        with torch.no_grad():
            out = d(x, t, c)
        assert out.shape == (2, self.out_channels(), self.spec.sample_size, self.spec.sample_size)
        assert out.dtype == x.dtype, f"a {x.dtype} input gave a {out.dtype} prediction"
        assert bool(torch.isfinite(out).all())

    def test_dtype_follows_the_input(self) -> None:
        """A float64 denoiser given float64 inputs predicts in float64 (no ``.float()``
        or float32 tensor made along the way), and agrees with its float32 self."""
        d = self.build()
        if not isinstance(d, torch.nn.Module):
            pytest.skip("not a torch module: it has no dtype of its own")
        x, t, c = self.inputs(2, self.spec.sample_size, seed=9)
        with torch.no_grad():
            single = d(x, t, c)
            out = d.to(torch.float64)(x.double(), t.double(), c.to(torch.float64))
        assert out.dtype == torch.float64, f"float64 weights and inputs gave a {out.dtype} prediction"
        torch.testing.assert_close(out.float(), single, rtol=1e-3, atol=1e-3)

    def test_output_follows_the_device(self) -> None:
        """On another device (a GPU, or torch's meta device without one) the prediction is there too:
        nothing is made on the CPU along the way."""
        d = self.build()
        if not isinstance(d, torch.nn.Module):
            pytest.skip("not a torch module: the core cannot move it")
        check = DeviceCheck()
        x, t, c = self.inputs(2, self.spec.sample_size, seed=10)
        d.to(check.device)
        with torch.no_grad():
            check.check("the prediction", lambda: d(x.to(check.device), t.to(check.device), c.to(check.device)))
        check.finish()

    def test_inputs_are_left_unchanged_and_no_random_numbers_drawn(self) -> None:
        """An evaluation-mode forward pass changes none of its inputs in place and draws
        nothing from the global random state (a dropout left on, noise added in ``forward``)."""
        d = self.build()
        x, t, c = self.inputs(2, self.spec.sample_size, seed=11)
        before = snapshot((x, t, c))
        with torch.no_grad(), global_random_state_unchanged("the denoiser's forward pass in eval mode"):
            d(x, t, c)
        assert_unchanged(before, (x, t, c), "the denoiser")

    @SETTINGS
    @given(batch=st.integers(1, 3), k=st.integers(1, 3), length=st.integers(1, 6))
    @example(batch=2, k=3, length=3)  # an odd multiple of size_multiple, always tried
    def test_shapes_over_sizes(self, batch: int, k: int, length: int) -> None:
        d = self.shared()
        size = self.size_multiple * k
        x, t, c = self.inputs(batch, size, length)
        with torch.no_grad():
            out = d(x, t, c)
        assert out.shape == (batch, self.out_channels(), size, size)
        assert bool(torch.isfinite(out).all())

    @SETTINGS
    @given(batch=st.integers(2, 4), row=st.integers(0, 3), seed=st.integers(0, 100))
    def test_batch_independence(self, batch: int, row: int, seed: int) -> None:
        """Sample ``row``'s prediction is the same whatever the other samples are."""
        d = self.shared()
        row = row % batch
        x, t, c = self.inputs(batch, self.spec.sample_size, seed=seed)
        x2, t2, c2 = self.inputs(batch, self.spec.sample_size, seed=seed + 1000)
        keep = torch.arange(batch) == row
        mixed_x = torch.where(keep[:, None, None, None], x, x2)
        mixed_t = torch.where(keep, t, t2)
        mixed_c = Conditioning.cat(
            [c.index(slice(i, i + 1)) if i == row else c2.index(slice(i, i + 1)) for i in range(batch)]
        )
        with torch.no_grad():
            a, b = d(x, t, c), d(mixed_x, mixed_t, mixed_c)
        torch.testing.assert_close(a[row], b[row], rtol=1e-4, atol=1e-5)

    def test_masked_context_positions_do_not_matter(self) -> None:
        if self.spec.conditioning.context_dim is None:
            pytest.skip("the spec has no context: nothing is masked")
        d = self.build()
        x, t, c = self.inputs(2, self.spec.sample_size, length=6, seed=3)
        mask = c.context_mask.clone()  # type: ignore[union-attr]
        mask[:, 4:] = False
        ctx = c.context.clone()  # type: ignore[union-attr]
        junk = ctx.clone()
        junk[:, 4:] = 50.0
        with torch.no_grad():
            a = d(x, t, Conditioning(c.concat, ctx, mask, c.vector))
            b = d(x, t, Conditioning(c.concat, junk, mask, c.vector))
            short = d(x, t, Conditioning(c.concat, ctx[:, :4], mask[:, :4], c.vector))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a, short, rtol=1e-4, atol=1e-5)

    @SETTINGS
    @given(data=st.data(), batch=st.integers(1, 3), length=st.integers(1, 7))
    def test_padding_per_row_does_not_matter(self, data: st.DataObject, batch: int, length: int) -> None:
        """Rows with different numbers of real tokens: junk under the mask changes nothing,
        and neither does cutting the context to the longest real row."""
        if self.spec.conditioning.context_dim is None:
            pytest.skip("the spec has no context: nothing is masked")
        lengths = data.draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch), label="lengths")
        d = self.shared()
        x, t, c = self.inputs(batch, self.spec.sample_size, length=length, seed=5, lengths=lengths)
        assert c.context is not None and c.context_mask is not None
        junk = c.context.masked_fill(~c.context_mask[..., None], 1e4)
        longest = max(lengths)
        with torch.no_grad():
            a = d(x, t, c)
            b = d(x, t, Conditioning(c.concat, junk, c.context_mask, c.vector))
            cut = d(x, t, Conditioning(c.concat, c.context[:, :longest], c.context_mask[:, :longest], c.vector))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a, cut, rtol=1e-4, atol=1e-5)

    def test_deterministic(self) -> None:
        d1, d2 = self.build(), self.build()
        x, t, c = self.inputs(2, self.spec.sample_size, seed=4)
        with torch.no_grad():
            torch.testing.assert_close(d1(x, t, c), d2(x, t, c), rtol=0, atol=0)

    def test_conditioning_is_used(self) -> None:
        """Each conditioning field the spec declares changes the prediction."""
        d = self.perturbed()
        x, t, c = self.inputs(2, self.spec.sample_size, seed=6)
        _, _, other = self.inputs(2, self.spec.sample_size, seed=7)
        with torch.no_grad():
            base = d(x, t, c)
            for name in ("concat", "context", "vector"):
                if getattr(c, name) is None:
                    continue
                changed = Conditioning(**{**c._fields(), name: getattr(other, name)})
                assert not torch.allclose(d(x, t, changed), base, atol=1e-6), (
                    f"changing conditioning.{name} changed nothing"
                )

    def test_time_input(self) -> None:
        """A denoising head depends on ``t``; a segmentation head ignores it."""
        d = self.perturbed()
        x, t, c = self.inputs(2, self.spec.sample_size, seed=8)
        with torch.no_grad():
            a, b = d(x, t, c), d(x, torch.flip(t, [0]) + 17.0, c)
        if self.segmentation:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        else:
            assert not torch.allclose(a, b), "the prediction does not depend on the timestep"
