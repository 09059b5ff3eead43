"""Mutants of :class:`~modiff.testing.toys.ToyEncoder`."""

from __future__ import annotations

import torch
from torch import nn

from ...noise import GeneratorArg, randn
from ..toys import ToyEncoder, ToyEncoderSettings
from .base import mutant


@mutant("encoder", "wrong dtype", "test_dtype_follows_the_input")
class LatentsInFloat32(ToyEncoder):
    """encode returns latents.float(), whatever the images' dtype."""

    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return super().encode(images, generator=generator).float()


@mutant("encoder", "leaks across the batch", "test_batch_independence")
class ScalesByTheBatchStd(ToyEncoder):
    """Latents are divided by the standard deviation of the whole batch."""

    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        z = super().encode(images, generator=generator)
        return z / (z.std() + 1e-6)


@mutant("encoder", "wrong range or type", "test_round_trip_is_exact")
class DecodeClamps(ToyEncoder):
    """decode clamps the images to [-1, 1] (the protocol says: not clamped)."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return super().decode(latents).clamp(-1, 1)


@mutant("encoder", "wrong shape", "test_size_not_multiple_of_downscale_is_a_clear_error")
class FloorsOddSizes(ToyEncoder):
    """A size that is not a multiple of downscale is silently floored by the pooling."""

    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        f = self.downscale
        z = nn.functional.avg_pool2d(images, f) if f > 1 else images
        return self.mix(z) * self.scale


@mutant("encoder", "wrong shape", "test_round_trip_keeps_the_shape_for_any_valid_size")
class DecodesToASquare(ToyEncoder):
    """decode upsamples to a square of the latent's height: non-square images come back square."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents / self.scale
        side = latents.shape[-2] * self.downscale
        return nn.functional.interpolate(x, size=(side, side))


@mutant("encoder", "global random state", "test_encode_is_reproducible_with_a_generator")
class PosteriorNoiseFromTheGlobalGenerator(ToyEncoder):
    """encode samples a little posterior noise with torch.randn_like, ignoring the generator."""

    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        z = super().encode(images, generator=generator)
        return z + 1e-3 * torch.randn_like(z)


@mutant("encoder", "global random state", "test_encode_is_reproducible_with_a_generator")
class ReseedsTheGlobalGenerator(ToyEncoder):
    """encode calls torch.manual_seed(0) to be reproducible, resetting everyone's random state."""

    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        torch.manual_seed(0)
        z = super().encode(images, generator=generator)
        return z + 1e-3 * torch.randn_like(z)


@mutant("encoder", "modifies its input", "test_inputs_are_left_unchanged")
class ClampsImagesInPlace(ToyEncoder):
    """encode clamps the images in place (images.clamp_), changing the caller's batch."""

    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        images.clamp_(-0.5, 0.5)
        return super().encode(images, generator=generator)


@mutant("encoder", "wrong device", "test_outputs_follow_the_device")
class ScaleMadeOnTheCpu(ToyEncoder):
    """decode divides by a per-channel scale made with torch.full (no device=)."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        per_channel = torch.full((1, self.latent_channels, 1, 1), 1.0, dtype=latents.dtype)
        return super().decode(latents / per_channel)


@mutant("encoder", "wrong range or type", "test_is_an_encoder")
class ScalingFactorIsATensor(ToyEncoder):
    """scaling_factor returns the buffer itself (a tensor), not a float."""

    @property
    def scaling_factor(self) -> float:
        return self.scale  # type: ignore[return-value]


@mutant("encoder", "ignores an input", "test_wrong_channel_count_is_a_clear_error")
class TakesAnyChannelCount(ToyEncoder):
    """encode repeats or cuts the channels to 3 instead of refusing a wrong channel count."""

    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dim() == 4 and images.shape[1] != 3:
            images = images.repeat(1, 3, 1, 1)[:, :3]
        return super().encode(images, generator=generator)


@mutant("encoder", "wrong range or type", "test_latent_shape")
class DeclaresFourLatentChannels(ToyEncoder):
    """latent_channels says 4 (as Stable Diffusion's autoencoder has) while the latents have 3."""

    latent_channels = 4

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents / self.scale
        return nn.functional.interpolate(x, scale_factor=self.downscale) if self.downscale > 1 else x


@mutant("encoder", "global random state", "test_latents_are_a_function_of_the_images_unless_it_samples")
class SamplesWithoutSayingSo(ToyEncoder):
    """encode adds posterior noise (from the generator, else the global one) but declares
    sample_posterior = False: the core caches one sample per image for the whole stage."""

    def __init__(self, s: ToyEncoderSettings):
        super().__init__(s)
        self.sample_posterior = False

    def encode(self, images: torch.Tensor, *, generator: GeneratorArg = None) -> torch.Tensor:
        z = super().encode(images, generator=generator)
        return z + self.spread * randn(z.shape, generator, device=z.device, dtype=z.dtype)


@mutant("encoder", "ignores an input", "test_posterior_samples_follow_their_generators")
class ClaimsToSampleButReturnsTheMean(ToyEncoder):
    """sample_posterior = True, but encode ignores its generators and returns the mean:
    the core encodes every step for nothing."""

    def __init__(self, s: ToyEncoderSettings):
        super().__init__(s)
        self.sample_posterior = True

    def encode(self, images: torch.Tensor, *, generator: GeneratorArg = None) -> torch.Tensor:
        self.sample_posterior = False
        try:
            return super().encode(images, generator=generator)
        finally:
            self.sample_posterior = True


@mutant("encoder", "leaks across the batch", "test_posterior_samples_follow_their_generators")
class OneGeneratorForTheWholeBatch(ToyEncoder):
    """Given one generator per image, it draws the whole batch's noise from the first, so
    an image's sample depends on its place in the batch (and on the process count)."""

    def __init__(self, s: ToyEncoderSettings):
        super().__init__(s)
        self.sample_posterior = True

    def encode(self, images: torch.Tensor, *, generator: GeneratorArg = None) -> torch.Tensor:
        if isinstance(generator, (list, tuple)):
            generator = generator[0] if generator else None
        return super().encode(images, generator=generator)
