"""``kl-autoencoder``: the Stable Diffusion VAE as a modiff encoder.

Parameter names follow diffusers' ``AutoencoderKL`` (``encoder.*``,
``decoder.*``, ``quant_conv``, ``post_quant_conv``), so a diffusers state dict
loads with ``strict=True``; the latent statistics (``latent_norm.*``) are
extra buffers that such a state dict may omit.

Lifecycle of a fresh autoencoder in a run:

1. ``needs_training`` is True; the core calls ``training_loss(batch)`` in its
   own loop (reconstruction + ``kl_weight`` * KL).
2. The core calls ``finish_training(batches)``: the latent shift and scale are
   estimated from data and ``needs_training`` becomes False.
3. The core saves ``state_dict()``; restoring it later (``load_state_dict``)
   restores the statistics *and* ``needs_training = False``, so the stage is
   skipped. A checkpoint saved mid-stage (before step 2) restores
   ``needs_training = True``, so a resumed run finishes the stage.

``needs_training`` can also be assigned directly (e.g. after importing
pretrained weights and calling :meth:`KLAutoencoder.set_latent_statistics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import modiff
from modiff.protocols import Batch

from .config import KLAutoencoderSettings
from .networks import DiagonalGaussian, VAEDecoder, VAEEncoder
from .normalization import LatentNormalizer

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def check_images(images: Tensor, downscale: int, who: str) -> None:
    """Raise a ValueError naming the offending shape or size, and ``f``."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{who} expects images [B, 3, H, W], got a tensor of shape {tuple(images.shape)}")
    h, w = int(images.shape[2]), int(images.shape[3])
    if h % downscale or w % downscale:
        raise ValueError(
            f"image size {h}x{w} is not a multiple of the {who}'s downscale f = {downscale}: "
            f"use an image size divisible by {downscale}, or an encoder with a smaller downscale"
        )


class KLAutoencoder(nn.Module):
    """A KL-regularised convolutional autoencoder (the SD VAE architecture).

    ``encode`` returns normalised latents (posterior mean by default), which is
    what the diffusion model is trained on; ``decode`` undoes the
    normalisation and never clamps, so out-of-range outputs stay visible.
    """

    def __init__(self, settings: KLAutoencoderSettings) -> None:
        super().__init__()
        self.settings = settings
        channels = settings.level_channels
        self.latent_channels = settings.latent_channels
        self.downscale = settings.resolved_downscale
        args = (channels, settings.latent_channels, settings.layers_per_block, settings.norm_num_groups)
        self.encoder = VAEEncoder(*args, attention=settings.mid_block_attention)
        self.decoder = VAEDecoder(*args, attention=settings.mid_block_attention)
        self.quant_conv = nn.Conv2d(2 * settings.latent_channels, 2 * settings.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(settings.latent_channels, settings.latent_channels, 1)
        self.latent_norm = LatentNormalizer(settings.latent_channels, settings.latent_normalization)
        #: The last loss terms, detached 0-dim tensors for logging: {"reconstruction", "kl"}.
        #: They stay tensors: reading one (``float(...)``) waits for the GPU, so do it when logging,
        #: not at every step.
        self.last_losses: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ state

    @property
    def needs_training(self) -> bool:
        """True until the latent statistics are estimated or set (see module doc)."""
        return not self.latent_norm.is_fitted

    @needs_training.setter
    def needs_training(self, value: bool) -> None:
        self.latent_norm.fitted.fill_(not value)

    @property
    def sample_posterior(self) -> bool:
        """Whether ``encode`` samples by default (the core caches latents only when it does not)."""
        return self.settings.sample_posterior

    @property
    def scaling_factor(self) -> float:
        """The latent scale as one number: the global factor, or in per-channel
        mode the mean of the per-channel factors. Informational only: encode
        applies the per-channel shift and scale of :attr:`latent_norm`."""
        return float(self.latent_norm.scale.mean())

    def set_latent_statistics(self, scale: float | Tensor, shift: float | Tensor = 0.0) -> None:
        """Set the latent normalisation by hand (SD 1.x: ``scale=0.18215``) and
        mark the autoencoder trained."""
        self.latent_norm.set(scale, shift)

    # ---------------------------------------------------------- raw (unscaled)

    def posterior(self, images: Tensor) -> DiagonalGaussian:
        """q(z | x) for images in [-1, 1]; raw latent units (before normalisation)."""
        check_images(images, self.downscale, "kl-autoencoder")
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(images)))

    def decode_raw(self, z: Tensor) -> Tensor:
        """Raw (unnormalised) latents to images."""
        self._check_latents(z)
        return self.decoder(self.post_quant_conv(z))

    def _check_latents(self, z: Tensor) -> None:
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"kl-autoencoder expects latents [B, {self.latent_channels}, h, w], got {tuple(z.shape)}"
            )

    def _encode_raw(self, images: Tensor, generator: GeneratorArg, sample: bool) -> Tensor:
        q = self.posterior(images)
        if not sample:
            return q.mean
        noise = modiff.randn(q.mean.shape, generator, device=q.mean.device, dtype=q.mean.dtype)
        return q.sample(noise)

    # --------------------------------------------------------------- protocol

    def encode(
        self, images: Tensor, *, generator: GeneratorArg = None, sample: bool | None = None
    ) -> Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] to normalised latents ``[B, C, H/f, W/f]``.

        Args:
            generator: draws the posterior sample (one generator, or one per image).
            sample: sample the posterior instead of taking its mean; defaults to
                the ``sample_posterior`` setting.
        """
        check_images(images, self.downscale, "kl-autoencoder")
        sample = self.settings.sample_posterior if sample is None else sample
        gens = _per_row(generator, images.shape[0])
        parts = [
            self._encode_raw(chunk, g, sample)
            for chunk, g in zip(self._slices(images), self._slice_generators(gens, images.shape[0]))
        ]
        return self.latent_norm.normalize(torch.cat(parts) if len(parts) > 1 else parts[0])

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents back to images ``[B, 3, H, W]`` (not clamped)."""
        self._check_latents(latents)
        z = self.latent_norm.denormalize(latents)
        parts = [self.decode_raw(chunk) for chunk in self._slices(z)]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def forward(self, images: Tensor) -> Tensor:
        """Reconstruct images through the posterior mean."""
        return self.decode(self.encode(images, sample=False))

    # --------------------------------------------------------------- training

    def training_loss(self, batch: Batch, step: modiff.TrainingStep | None = None) -> Tensor:
        """Reconstruction loss (per pixel) + ``kl_weight`` * KL (per latent element).

        The decoder sees a posterior sample, as in any VAE; the KL term keeps
        the latent near N(0, I) so it stays smooth for the diffusion model.
        The sample's noise comes from ``step`` (drawn for the global batch), so
        N processes draw what one process would.
        """
        images = batch.images
        q = self.posterior(images)
        z = q.sample(step.randn_like(q.mean) if step is not None else torch.randn_like(q.mean))
        recon = self.decode_raw(z).float()
        target = images.float()
        kind = self.settings.reconstruction_loss
        rec = recon.new_zeros(())
        if kind in ("l1", "both"):
            rec = rec + F.l1_loss(recon, target)
        if kind in ("mse", "both"):
            rec = rec + F.mse_loss(recon, target)
        kl = q.kl().float().mean()
        self.last_losses = {"reconstruction": rec.detach(), "kl": kl.detach()}
        return rec + self.settings.kl_weight * kl

    @torch.no_grad()
    def finish_training(self, batches: Iterable[Batch]) -> None:
        """Estimate the latent shift and scale from at most
        ``normalization_batches`` batches, so that encoded latents have unit
        variance (per channel or globally); marks the autoencoder trained."""
        was_training = self.training
        self.eval()
        sample = self.settings.sample_posterior
        limit = self.settings.normalization_batches

        def raw() -> Iterator[Tensor]:
            device = self.quant_conv.weight.device
            for batch in islice(batches, limit):
                images = batch.images.to(device)
                yield torch.cat([self._encode_raw(chunk, None, sample) for chunk in self._slices(images)])

        try:
            self.latent_norm.fit(raw())
        finally:
            self.train(was_training)

    # ---------------------------------------------------------------- helpers

    def _slices(self, x: Tensor) -> list[Tensor]:
        size = self.settings.slice_size
        if size is None or x.shape[0] <= size:
            return [x]
        return list(x.split(size))

    def _slice_generators(self, gens: GeneratorArg, batch: int) -> list[GeneratorArg]:
        size = self.settings.slice_size
        if size is None or batch <= size:
            return [gens]
        if gens is None or isinstance(gens, torch.Generator):
            return [gens] * -(-batch // size)
        return [gens[i : i + size] for i in range(0, batch, size)]


def _per_row(generator: GeneratorArg, batch: int) -> GeneratorArg:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch} images; give one per image")
    return gens
