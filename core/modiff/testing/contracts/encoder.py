"""Contract for :class:`modiff.protocols.Encoder`.

Subclass :class:`EncoderContract`, set ``plugin`` and ``settings``; set
``exact = True`` for an encoder whose round trip must be bit-exact (pixel
space), which also checks that nothing is clamped.

What the core assumes of an encoder's latents is checked too: unless it
declares ``sample_posterior = True`` (:class:`modiff.protocols.SamplesPosterior`)
an image's latent is computed once and cached, so ``encode`` must be a
function of the images alone; if it does, it is encoded every step with one
generator per image, so each latent must follow its own generator.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ...protocols import Encoder, SamplesPosterior, Trainable, samples_posterior
from .base import CONTRACT_SETTINGS, Contract
from .checks import DeviceCheck, assert_unchanged, floating_dtype_of, global_random_state_unchanged

#: One project usually runs this contract for several encoders (identity and an
#: autoencoder); each subclass is a different executor of the same test
#: function, which Hypothesis flags unless told it is intended. Examples are
#: derandomized, so nothing is replayed across executors.
ENCODER_SETTINGS = hsettings(
    CONTRACT_SETTINGS,
    suppress_health_check=[*CONTRACT_SETTINGS.suppress_health_check, HealthCheck.differing_executors],
)


class EncoderContract(Contract):
    """Every encoder: latent shapes, round-trip shapes, batch independence, size errors;
    reproducible with a generator and nothing drawn from the global random state; outputs
    in the input's dtype and on its device; inputs left unchanged."""

    role: ClassVar[str] = "encoder"
    image_size: ClassVar[int] = 16
    #: ``decode(encode(x)) == x`` exactly, for any values (no clamping).
    exact: ClassVar[bool] = False

    def images(self, batch: int, size: int | tuple[int, int] | None = None, seed: int = 0) -> torch.Tensor:
        size = size or self.image_size
        h, w = (size, size) if isinstance(size, int) else size
        g = torch.Generator().manual_seed(seed)
        return torch.rand(batch, 3, h, w, generator=g) * 2 - 1

    def test_is_an_encoder(self) -> None:
        e = self.build()
        assert isinstance(e, Encoder)
        assert isinstance(e.downscale, int) and e.downscale >= 1
        assert isinstance(e.latent_channels, int) and e.latent_channels >= 1
        assert isinstance(e.scaling_factor, float) and e.scaling_factor > 0
        if isinstance(e, Trainable):
            assert isinstance(e.needs_training, bool)
        if isinstance(e, SamplesPosterior):
            assert isinstance(e.sample_posterior, bool), f"sample_posterior is {e.sample_posterior!r}, not a bool"

    @ENCODER_SETTINGS
    @given(batch=st.integers(1, 3), k=st.integers(1, 3))
    def test_latent_shape(self, batch: int, k: int) -> None:
        e = self.shared()
        size = e.downscale * k * (2 if e.downscale == 1 else 1)
        with torch.no_grad():
            z = e.encode(self.images(batch, size))
            assert z.shape == (batch, e.latent_channels, size // e.downscale, size // e.downscale)
            assert e.decode(z).shape == (batch, 3, size, size)

    @ENCODER_SETTINGS
    @given(kh=st.integers(1, 4), kw=st.integers(1, 4))
    @example(kh=1, kw=3)  # not square, and an odd multiple: always tried
    def test_round_trip_keeps_the_shape_for_any_valid_size(self, kh: int, kw: int) -> None:
        """Non-square sizes too: ``H`` and ``W`` are independent multiples of ``f``."""
        e = self.shared()
        f = e.downscale
        x = self.images(2, (f * kh, f * kw))
        with torch.no_grad():
            z = e.encode(x)
            assert z.shape == (2, e.latent_channels, kh, kw)
            y = e.decode(z)
        assert y.shape == x.shape
        assert y.dtype == x.dtype
        assert torch.isfinite(z).all() and torch.isfinite(y).all()

    def test_round_trip_is_exact(self) -> None:
        if not self.exact:
            pytest.skip("this encoder is lossy")
        e = self.build()
        x = self.images(3) * 3  # outside [-1, 1] too: decode must not clamp
        with torch.no_grad():
            torch.testing.assert_close(e.decode(e.encode(x)), x, rtol=0, atol=0)

    def test_batch_independence(self) -> None:
        """An image's latent does not depend on the rest of the batch (for an encoder
        that samples its posterior: given the same generator for that image)."""
        e = self.build()
        x = self.images(3)
        sampling = samples_posterior(e)

        def encode(images: torch.Tensor) -> torch.Tensor:
            return e.encode(images, generator=_generators(range(len(images))) if sampling else None)

        with torch.no_grad():
            full = encode(x)
            y = x.clone()
            y[1:] = self.images(2, seed=9)
            part = encode(y)
            torch.testing.assert_close(full[0], part[0], rtol=1e-5, atol=self.atol)
            torch.testing.assert_close(e.decode(full)[0], e.decode(part)[0], rtol=1e-5, atol=self.atol)
            alone = encode(x[:1])
            torch.testing.assert_close(full[:1], alone, rtol=1e-5, atol=self.atol)

    def test_latents_are_a_function_of_the_images_unless_it_samples(self) -> None:
        """Without ``sample_posterior = True`` the core computes each image's latent once
        and caches it for the whole denoiser stage, so ``encode`` must give an image the
        same latent every time, whatever generator it is given (an encoder that samples
        its posterior must say so, or the stage trains on one frozen sample)."""
        e = self.build()
        if samples_posterior(e):
            pytest.skip("samples its posterior (sample_posterior = True): its latents are not cached")
        x = self.images(2)
        with torch.no_grad():
            first = e.encode(x)
            again = e.encode(x)
            drawn = e.encode(x, generator=torch.Generator().manual_seed(3))
        declare = "declare sample_posterior = True if it samples its posterior"
        assert torch.equal(first, again), f"encode changes from call to call; {declare}"
        assert torch.equal(first, drawn), f"encode depends on its generator; {declare}"

    def test_posterior_samples_follow_their_generators(self) -> None:
        """With ``sample_posterior = True`` the core encodes every step, with one generator
        per image (seeded from the step, so N processes draw what one would): equal
        generators give equal latents, other generators other latents, and an image's
        latent depends on its own generator alone, not on its place in the batch."""
        e = self.build()
        if not samples_posterior(e):
            pytest.skip("does not sample its posterior: its latents are cached")
        x = self.images(3)
        with torch.no_grad():
            a = e.encode(x, generator=_generators([1, 2, 3]))
            b = e.encode(x, generator=_generators([1, 2, 3]))
            other = e.encode(x, generator=_generators([4, 5, 6]))
            second_alone = e.encode(x[1:2], generator=_generators([2]))
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg="equal generators gave different latents")
        for i in range(len(x)):
            assert not torch.equal(a[i], other[i]), (
                f"image {i}'s latent is the same for another generator: "
                "sample_posterior = True, but encode does not sample"
            )
        torch.testing.assert_close(
            a[1:2], second_alone, rtol=1e-5, atol=self.atol,
            msg="an image's latent depends on the other images' generators: draw row i from generator i",
        )

    def test_encode_is_reproducible_with_a_generator(self) -> None:
        """Equal generators give equal latents, whatever the global random state, which
        ``encode`` neither draws from nor reseeds when it is given a generator."""
        e = self.build()
        x = self.images(2)
        with torch.no_grad():
            g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
            torch.manual_seed(1)
            a = e.encode(x, generator=g1)
            torch.manual_seed(2)
            with global_random_state_unchanged("encode(generator=...)"):
                b = e.encode(x, generator=g2)
            torch.testing.assert_close(a, b, rtol=0, atol=0)
            with global_random_state_unchanged("decode"):
                e.decode(a)

    def test_dtype_follows_the_input(self) -> None:
        """float64 images (and weights) give float64 latents and float64 images back."""
        e = self.build()
        if floating_dtype_of(e) is not None:
            e.to(torch.float64)
        x = self.images(2).double()
        with torch.no_grad():
            z = e.encode(x, generator=torch.Generator().manual_seed(0))
            assert z.dtype == torch.float64, f"float64 images gave {z.dtype} latents"
            y = e.decode(z)
        assert y.dtype == torch.float64, f"float64 latents decoded to {y.dtype} images"

    def test_outputs_follow_the_device(self) -> None:
        """Latents and decoded images are on the images' device (a GPU, or torch's meta
        device without one)."""
        e = self.build()
        check = DeviceCheck()
        if isinstance(e, torch.nn.Module):
            e.to(check.device)
        x = self.images(2).to(check.device)
        with torch.no_grad():
            z = check.check("encode", lambda: e.encode(x, generator=torch.Generator().manual_seed(0)))
            if z is not None:
                check.check("decode", lambda: e.decode(z))
        check.finish()

    def test_inputs_are_left_unchanged(self) -> None:
        e = self.build()
        x = self.images(2)
        kept = x.clone()
        with torch.no_grad():
            z = e.encode(x, generator=torch.Generator().manual_seed(0))
            assert_unchanged(kept, x, "encode")
            z_kept = z.clone()
            e.decode(z)
        assert_unchanged(z_kept, z, "decode")

    def test_size_not_multiple_of_downscale_is_a_clear_error(self) -> None:
        e = self.build()
        if e.downscale == 1:
            pytest.skip("every size is a multiple of 1")
        bad = e.downscale * 2 + 1
        with pytest.raises(ValueError, match=str(bad)):
            e.encode(self.images(1, bad))
        with pytest.raises(ValueError, match=str(bad)):
            e.encode(self.images(1, (e.downscale * 2, bad)))

    def test_wrong_channel_count_is_a_clear_error(self) -> None:
        e = self.build()
        f = e.downscale
        with pytest.raises(ValueError):
            e.encode(torch.zeros(1, 1, 2 * f, 2 * f))
        with pytest.raises(ValueError):
            e.decode(torch.zeros(1, e.latent_channels + 1, 2, 2))


def _generators(seeds: range | list[int]) -> list[torch.Generator]:
    """One CPU generator per image, as the core hands a sampling encoder in training."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]
