"""kl-autoencoder behaviour beyond the contract: training, latent statistics,
saving and restoring, sampling, slicing, errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import modiff
from modiff.protocols import Batch, Encoder, Trainable
from modiff.testing import build_one

TINY: dict[str, Any] = {"channels": [8, 16, 16], "latent_channels": 4, "norm_num_groups": 4}

Squares = Callable[[int, int, int], torch.Tensor]


def tiny(**overrides: Any) -> Any:
    torch.manual_seed(0)
    return build_one("encoder", "kl-autoencoder", {**TINY, **overrides})


def batches(squares: Squares, n: int, size: int = 16, batch: int = 8, seed: int = 0) -> list[Batch]:
    return [Batch(squares(batch, size, seed + i), [""] * batch) for i in range(n)]


def test_is_an_encoder_and_trainable() -> None:
    e = tiny()
    assert isinstance(e, Encoder) and isinstance(e, Trainable)
    assert e.needs_training is True
    assert isinstance(e.scaling_factor, float)


def test_identity_needs_no_training() -> None:
    e = build_one("encoder", "identity")
    assert e.needs_training is False
    assert (e.latent_channels, e.downscale, e.scaling_factor) == (3, 1, 1.0)


@pytest.mark.slow  # 40 training steps: the slowest test outside the four kinds
def test_training_loss_decreases(squares: Squares) -> None:
    e = tiny().train()
    data = batches(squares, 4)
    opt = torch.optim.AdamW(e.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        loss = e.training_loss(data[step % len(data)])
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.5 * first, (first, last)
    assert set(e.last_losses) == {"reconstruction", "kl"}


@pytest.mark.parametrize("kind", ["l1", "mse", "both"])
def test_loss_is_reconstruction_plus_weighted_kl(kind: str, squares: Squares) -> None:
    """With the posterior's noise fixed, the loss is exactly the documented sum."""
    e = tiny(reconstruction_loss=kind, kl_weight=0.5)
    images = squares(2, 16, 3)
    torch.manual_seed(5)
    loss = e.training_loss(Batch(images, ["", ""]))
    torch.manual_seed(5)
    q = e.posterior(images)
    recon = e.decode_raw(q.sample(torch.randn_like(q.mean)))
    l1 = (recon - images).abs().mean()
    mse = (recon - images).square().mean()
    rec = {"l1": l1, "mse": mse, "both": l1 + mse}[kind]
    kl = (0.5 * (q.mean**2 + q.logvar.exp() - 1 - q.logvar)).mean()
    torch.testing.assert_close(loss, rec + 0.5 * kl)


def test_kl_of_a_standard_normal_posterior_is_zero() -> None:
    from modiff_autoencoders.networks import DiagonalGaussian

    q = DiagonalGaussian.from_moments(torch.zeros(2, 8, 3, 3))
    assert torch.equal(q.kl(), torch.zeros(2, 4, 3, 3))


def channel_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = z.transpose(0, 1).reshape(z.shape[1], -1)
    return flat.mean(dim=1), flat.std(dim=1)


def skew_channels(e: Any, factors: list[float]) -> None:
    """Give the raw latent channels very different scales, as FINDINGS.md
    measured after training (1.75, 0.88, 0.33, 0.21 after one global scale)."""
    with torch.no_grad():
        c = e.latent_channels
        e.quant_conv.weight[:c] *= torch.tensor(factors).view(-1, 1, 1, 1)
        e.quant_conv.bias[:c] = torch.tensor([3.0, -2.0, 0.5, 1.0])


def test_per_channel_statistics_give_unit_variance_on_held_out_data(squares: Squares) -> None:
    e = tiny()
    skew_channels(e, [10.0, 1.0, 0.1, 0.01])
    e.finish_training(iter(batches(squares, 6, seed=0)))
    assert not e.needs_training
    with torch.no_grad():
        z = e.encode(squares(64, 16, 1000))  # images never seen by finish_training
    mean, std = channel_stats(z)
    torch.testing.assert_close(mean, torch.zeros(4), atol=0.15, rtol=0)
    torch.testing.assert_close(std, torch.ones(4), atol=0.15, rtol=0)


def test_global_statistics_give_unit_variance_overall_but_keep_channel_ratios(squares: Squares) -> None:
    """The failure mode per-channel normalisation exists for: one global scale
    makes the whole latent unit-variance while a channel stays tiny."""
    e = tiny(latent_normalization="global")
    skew_channels(e, [10.0, 1.0, 0.1, 0.01])
    e.finish_training(batches(squares, 6, seed=0))
    with torch.no_grad():
        z = e.encode(squares(64, 16, 1000))
    assert abs(float(z.mean())) < 0.15
    assert float(z.std()) == pytest.approx(1.0, abs=0.15)
    _, std = channel_stats(z)
    assert float(std.max() / std.min()) > 50
    assert torch.all(e.latent_norm.scale == e.latent_norm.scale[0])
    assert e.scaling_factor == pytest.approx(float(e.latent_norm.scale[0]))


def test_finish_training_reads_at_most_normalization_batches(squares: Squares) -> None:
    e = tiny(normalization_batches=2)
    read = []

    def endless() -> Any:
        i = 0
        while True:
            read.append(i)
            yield Batch(squares(2, 16, i), ["", ""])
            i += 1

    e.eval()
    e.finish_training(endless())
    assert len(read) == 2
    assert not e.training  # the mode it was in is restored
    e.train()
    e.finish_training(batches(squares, 1))
    assert e.training


def test_state_dict_round_trip_through_safetensors(tmp_path: Path, squares: Squares) -> None:
    """Everything needed to restore the encoder is in state_dict(); a restored
    trained encoder does not ask to be trained again."""
    e = tiny()
    skew_channels(e, [2.0, 1.0, 0.5, 0.25])
    e.finish_training(batches(squares, 2))
    path = tmp_path / "encoder.safetensors"
    save_file(e.state_dict(), str(path))

    torch.manual_seed(123)
    fresh = build_one("encoder", "kl-autoencoder", TINY).eval()
    assert fresh.needs_training
    fresh.load_state_dict(load_file(str(path)), strict=True)
    assert not fresh.needs_training
    x = squares(3, 16, 7)
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode(x), e.encode(x), rtol=0, atol=0)
        torch.testing.assert_close(fresh.decode(e.encode(x)), e.decode(e.encode(x)), rtol=0, atol=0)


def test_checkpoint_saved_mid_stage_still_needs_training() -> None:
    e = tiny()
    fresh = tiny()
    fresh.load_state_dict(e.state_dict(), strict=True)
    assert fresh.needs_training


def test_state_dict_without_statistics_keeps_them_and_still_loads_strictly() -> None:
    e = tiny()
    e.set_latent_statistics(0.5, 0.25)
    weights_only = {k: v for k, v in tiny().state_dict().items() if not k.startswith("latent_norm.")}
    e.load_state_dict(weights_only, strict=True)
    assert not e.needs_training
    assert torch.all(e.latent_norm.scale == 0.5) and torch.all(e.latent_norm.shift == 0.25)


def test_needs_training_can_be_assigned() -> None:
    e = tiny()
    e.needs_training = False
    assert e.needs_training is False
    e.needs_training = True
    assert e.needs_training is True


def test_bad_statistics_are_refused() -> None:
    e = tiny()
    with pytest.raises(ValueError, match="positive"):
        e.set_latent_statistics(0.0)
    with pytest.raises(ValueError, match="finite"):
        e.set_latent_statistics(1.0, float("nan"))


@settings(max_examples=10, deadline=None)
@given(
    scale=st.lists(st.floats(0.01, 100), min_size=4, max_size=4),
    shift=st.lists(st.floats(-10, 10), min_size=4, max_size=4),
)
def test_decode_inverts_the_normalisation(scale: list[float], shift: list[float]) -> None:
    """decode(encode(x)) does not depend on the latent statistics: they only
    change the units the denoiser sees."""
    e = _shared_tiny()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        e.set_latent_statistics(1.0, 0.0)
        reference = e.decode(e.encode(x))
        e.set_latent_statistics(torch.tensor(scale), torch.tensor(shift))
        z = e.encode(x)
        torch.testing.assert_close(e.decode(z), reference, rtol=1e-4, atol=1e-4)
        raw = e.posterior(x).mean
        expected = (raw - torch.tensor(shift).view(1, -1, 1, 1)) * torch.tensor(scale).view(1, -1, 1, 1)
        torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-5)


_SHARED: dict[str, Any] = {}


def _shared_tiny() -> Any:
    if "e" not in _SHARED:
        _SHARED["e"] = tiny().eval()
    return _SHARED["e"]


def test_posterior_sampling_is_per_image_with_per_image_generators(squares: Squares) -> None:
    e = tiny(sample_posterior=True, slice_size=2).eval()
    with torch.no_grad():  # make the posterior wide so samples differ visibly
        e.quant_conv.bias[4:] = 0.0
    x = squares(5, 16, 4)
    with torch.no_grad():
        full = e.encode(x, generator=modiff.generators([10, 11, 12, 13, 14]))
        alone = e.encode(x[3:4], generator=modiff.generators([13]))
        torch.testing.assert_close(full[3:4], alone, rtol=1e-5, atol=1e-5)
        mean = e.encode(x, sample=False)
    assert not torch.allclose(full, mean, atol=1e-3)
    with pytest.raises(ValueError, match="one per image"):
        e.encode(x, generator=modiff.generators([1, 2]))


def test_encode_uses_the_posterior_mean_by_default(squares: Squares) -> None:
    e = tiny().eval()
    x = squares(2, 16, 6)
    with torch.no_grad():
        torch.testing.assert_close(e.encode(x), e.posterior(x).mean, rtol=0, atol=0)
        torch.testing.assert_close(e.encode(x, generator=torch.Generator().manual_seed(0)), e.encode(x))


def test_slicing_gives_the_same_result(squares: Squares) -> None:
    whole, sliced = tiny().eval(), tiny(slice_size=3).eval()
    sliced.load_state_dict(whole.state_dict())
    x = squares(7, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(sliced.encode(x), whole.encode(x), rtol=1e-5, atol=1e-5)
        z = whole.encode(x)
        torch.testing.assert_close(sliced.decode(z), whole.decode(z), rtol=1e-5, atol=1e-5)


def test_decode_clamps_nothing() -> None:
    e = tiny().eval()
    with torch.no_grad():
        e.decoder.conv_out.bias.fill_(5.0)
        out = e.decode(torch.zeros(1, 4, 2, 2))
    assert float(out.min()) > 1.0


def test_size_error_names_the_size_and_f() -> None:
    e = tiny()
    with pytest.raises(ValueError, match=r"image size 18x16 is not a multiple .* f = 4"):
        e.encode(torch.zeros(1, 3, 18, 16))
    with pytest.raises(ValueError, match="18x16"):
        e.training_loss(Batch(torch.zeros(1, 3, 18, 16), [""]))
    with pytest.raises(ValueError, match=r"latents \[B, 4, h, w\]"):
        e.decode(torch.zeros(1, 3, 4, 4))
