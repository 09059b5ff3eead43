"""Contract for :class:`modiff.protocols.Conditioner`."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ...assembly import BuildContext
from ...protocols import Conditioner, Conditioning, TextEmbedding
from ...settings import RunSettings
from .base import CONTRACT_SETTINGS, Contract
from .checks import (
    DeviceCheck,
    assert_dtype,
    assert_unchanged,
    floating_dtype_of,
    global_random_state_unchanged,
    has_tensors,
    snapshot,
)

#: The shared contract settings, plus: every subclass runs the same test
#: functions with its own ``self``, which is intended here.
SETTINGS = hsettings(
    CONTRACT_SETTINGS,
    suppress_health_check=[*CONTRACT_SETTINGS.suppress_health_check, HealthCheck.differing_executors],
)


class FakeTextEmbedder:
    """A text embedder stand-in of a given width, for building conditioners alone."""

    def __init__(self, dim: int = 16, max_tokens: int = 8):
        self.dim = dim
        self.max_tokens = max_tokens


def fake_embedding(batch: int, length: int, dim: int, seed: int = 0, lengths: list[int] | None = None) -> TextEmbedding:
    """Random token embeddings with ``lengths[i]`` real tokens in row ``i`` and a masked-mean pool."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, dim, generator=g)
    lengths = lengths or [max(1, length - i % length) for i in range(batch)]
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return TextEmbedding(tokens, mask, pooled)


def _rows_equal(a: Conditioning, i: int, b: Conditioning, j: int) -> None:
    """Row ``i`` of ``a`` equals row ``j`` of ``b`` (contexts compared on their real positions)."""
    for name in ("concat", "vector"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            torch.testing.assert_close(x[i], y[j])
    if a.context is not None:
        assert b.context is not None
        ma = a.context_mask[i] if a.context_mask is not None else torch.ones(a.context.shape[1], dtype=torch.bool)
        mb = b.context_mask[j] if b.context_mask is not None else torch.ones(b.context.shape[1], dtype=torch.bool)
        torch.testing.assert_close(a.context[i][ma], b.context[j][mb])


class ConditionerContract(Contract):
    """Every conditioner: output and null fit its spec over batch sizes and token counts;
    padding and other samples do not matter; the null is one fixed row whose context is as
    long as the prompts'; ``condition(None)`` is the null; an image context lands unchanged
    in the last concatenated channels; determinism; float64 and the device follow the
    inputs (and the weights, for the null); inputs left unchanged, no global random draws.

    Set ``image_context_channels`` to the value the settings give (0 for none)
    and ``uses_text = False`` for an unconditional conditioner.
    """

    role: ClassVar[str] = "conditioner"
    text_dim: ClassVar[int] = 16
    latent_size: ClassVar[int] = 8
    latent_channels: ClassVar[int] = 4
    #: Whether the conditioner uses the text at all (``none`` does not).
    uses_text: ClassVar[bool] = True
    #: Channels of the image context the settings ask for (0 for none).
    image_context_channels: ClassVar[int] = 0

    def context(self) -> Any:
        return BuildContext(
            run=RunSettings(image_size=self.latent_size),
            text_embedder=FakeTextEmbedder(self.text_dim),  # type: ignore[arg-type]
        )

    def check_fits_spec(self, c: Conditioner, out: Conditioning, batch: int) -> None:
        spec = c.spec
        if spec.concat_channels:
            assert out.concat is not None and out.concat.shape == (
                batch,
                spec.concat_channels,
                self.latent_size,
                self.latent_size,
            )
        else:
            assert out.concat is None
        if spec.context_dim is not None:
            assert (
                out.context is not None and out.context.shape[0] == batch and out.context.shape[2] == spec.context_dim
            )
            if out.context_mask is not None:
                assert out.context_mask.shape == out.context.shape[:2] and out.context_mask.dtype == torch.bool
                assert bool(out.context_mask.any(1).all()), "every row needs at least one real context position"
        else:
            assert out.context is None
        if spec.vector_dim is not None:
            assert out.vector is not None and out.vector.shape == (batch, spec.vector_dim)
        else:
            assert out.vector is None
        for name in ("concat", "context", "vector"):
            value = getattr(out, name)
            if value is not None:
                assert bool(torch.isfinite(value).all()), f"{name} is not finite"

    def image(self, batch: int, seed: int = 0) -> torch.Tensor | None:
        if not self.image_context_channels:
            return None
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, self.image_context_channels, self.latent_size, self.latent_size, generator=g)

    def test_is_a_conditioner(self) -> None:
        c = self.build()
        assert isinstance(c, Conditioner)
        assert c.spec.concat_channels >= self.image_context_channels

    @SETTINGS
    @given(batch=st.integers(1, 4), length=st.integers(1, 8))
    def test_output_and_null_fit_the_spec(self, batch: int, length: int) -> None:
        c = self.shared()
        with torch.no_grad():
            emb = fake_embedding(batch, length, self.text_dim)
            self.check_fits_spec(c, c.condition(emb), batch)
            self.check_fits_spec(c, c.condition(emb, image_context=self.image(batch)), batch)
            self.check_fits_spec(c, c.null(batch), batch)
            self.check_fits_spec(c, c.null(batch, like=emb), batch)
            self.check_fits_spec(c, c.condition(None, batch_size=batch), batch)

    @SETTINGS
    @given(data=st.data(), batch=st.integers(1, 4), length=st.integers(1, 8))
    def test_padding_does_not_matter(self, data: st.DataObject, batch: int, length: int) -> None:
        """Junk under the mask changes nothing that the mask says is real."""
        lengths = data.draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch), label="lengths")
        c = self.shared()
        emb = fake_embedding(batch, length, self.text_dim, lengths=lengths)
        noisy = emb.tokens.masked_fill(~emb.mask[..., None], 100.0)
        with torch.no_grad():
            a, b = c.condition(emb), c.condition(TextEmbedding(noisy, emb.mask, emb.pooled))
        for i in range(batch):
            _rows_equal(a, i, b, i)

    @SETTINGS
    @given(batch=st.integers(2, 4), row=st.integers(0, 3))
    def test_batch_independence(self, batch: int, row: int) -> None:
        """Row ``row`` is the same whatever the other prompts (and image contexts) are."""
        row = row % batch
        c = self.shared()
        emb = fake_embedding(batch, 5, self.text_dim, seed=1)
        other = fake_embedding(batch, 5, self.text_dim, seed=2)
        keep = torch.arange(batch) == row
        mixed = TextEmbedding(
            torch.where(keep[:, None, None], emb.tokens, other.tokens),
            torch.where(keep[:, None], emb.mask, other.mask),
            torch.where(keep[:, None], emb.pooled, other.pooled),
        )
        image, image2 = self.image(batch, seed=1), self.image(batch, seed=2)
        mixed_image = None if image is None else torch.where(keep[:, None, None, None], image, image2)  # type: ignore[arg-type]
        with torch.no_grad():
            a, b = c.condition(emb, image_context=image), c.condition(mixed, image_context=mixed_image)
        _rows_equal(a, row, b, row)

    def test_text_changes_the_output(self) -> None:
        if not self.uses_text:
            pytest.skip("uses_text = False: the text is ignored (test_text_is_ignored_when_unused)")
        c = self.build()
        with torch.no_grad():
            a = c.condition(fake_embedding(1, 4, self.text_dim, seed=1))
            b = c.condition(fake_embedding(1, 4, self.text_dim, seed=2))
        differs = [
            not torch.equal(getattr(a, n), getattr(b, n))
            for n in ("concat", "context", "vector")
            if getattr(a, n) is not None
        ]
        assert any(differs), "different prompts gave identical conditioning"

    def test_text_is_ignored_when_unused(self) -> None:
        if self.uses_text:
            pytest.skip("uses_text = True: the text must change the output (test_text_changes_the_output)")
        c = self.build()
        with torch.no_grad():
            a = c.condition(fake_embedding(2, 4, self.text_dim, seed=1))
            b = c.condition(None, batch_size=2)
        for i in range(2):
            _rows_equal(a, i, b, i)

    @SETTINGS
    @given(batch=st.integers(1, 4), length=st.integers(1, 8))
    def test_null_is_one_row_as_long_as_the_prompts(self, batch: int, length: int) -> None:
        """The null does not depend on the prompts (only on their length), every row is the
        same, its context is as long as ``like``'s tokens, and ``condition(None)`` is the null."""
        c = self.shared()
        emb = fake_embedding(batch, length, self.text_dim, seed=3)
        other = fake_embedding(batch, length, self.text_dim, seed=4)
        with torch.no_grad():
            null = c.null(batch, like=emb)
            again = c.null(batch, like=other)
            plain = c.condition(None, batch_size=batch)
            single = c.null(1)
        if null.context is not None:
            assert null.context.shape[1] == length, "null(like=...) must match the prompts' token count"
        for i in range(batch):
            _rows_equal(null, i, again, i)
            _rows_equal(null, i, plain, i)
            _rows_equal(null, i, single, 0)

    def test_image_context_is_appended_unchanged(self) -> None:
        k = self.image_context_channels
        if not k:
            pytest.skip("image_context_channels = 0: the settings ask for no image context")
        c = self.build()
        image = self.image(2, seed=5)
        assert image is not None
        with torch.no_grad():
            out = c.condition(fake_embedding(2, 4, self.text_dim), image_context=image)
            alone = c.condition(None, image_context=image)
        for result in (out, alone):
            assert result.concat is not None
            torch.testing.assert_close(result.concat[:, -k:], image, rtol=0, atol=0)

    def test_deterministic(self) -> None:
        a, b = self.build(), self.build()
        emb = fake_embedding(3, 5, self.text_dim, seed=6)
        with torch.no_grad():
            x, y = a.condition(emb, image_context=self.image(3)), b.condition(emb, image_context=self.image(3))
        for i in range(3):
            _rows_equal(x, i, y, i)

    def test_dtype_follows_the_inputs(self) -> None:
        """A float64 conditioner given a float64 embedding (and image context) conditions in
        float64, and its null is float64 too (a conditioner without weights of its own, whose
        null comes from elsewhere, has only ``condition`` checked)."""
        c = self.build()
        if floating_dtype_of(c) is not None:
            c.to(torch.float64)
        emb = fake_embedding(2, 5, self.text_dim, seed=7)
        emb = TextEmbedding(emb.tokens.double(), emb.mask, emb.pooled.double())
        image = self.image(2, seed=7)
        image = None if image is None else image.double()
        with torch.no_grad():
            assert_dtype(c.condition(emb, image_context=image), torch.float64, "condition")
            if floating_dtype_of(c) is None:
                pytest.skip(
                    "no floating weights: the null has no dtype of the conditioner's to follow (condition checked)"
                )
            assert_dtype(c.condition(None, image_context=image, batch_size=2), torch.float64, "condition(None)")
            assert_dtype(c.null(2, like=emb), torch.float64, "null, of a float64 conditioner")

    def test_outputs_follow_the_device(self) -> None:
        """On another device (a GPU, or torch's meta device without one) the conditioning and
        the null are there too."""
        c = self.build()
        check = DeviceCheck()
        if has_tensors(c):
            c.to(check.device)
        emb = fake_embedding(2, 5, self.text_dim, seed=8)
        emb = TextEmbedding(emb.tokens.to(check.device), emb.mask.to(check.device), emb.pooled.to(check.device))
        image = self.image(2, seed=8)
        image = None if image is None else image.to(check.device)
        with torch.no_grad():
            check.check("condition", lambda: c.condition(emb, image_context=image))
            if has_tensors(c):
                check.check("condition(None)", lambda: c.condition(None, image_context=image, batch_size=2))
                check.check("null", lambda: c.null(2, like=emb))
        check.finish()
        if not has_tensors(c):
            pytest.skip(
                "no weights or buffers: the null has no device of the conditioner's to follow (condition checked)"
            )

    def test_inputs_are_left_unchanged_and_no_random_numbers_drawn(self) -> None:
        c = self.build()
        emb = fake_embedding(2, 5, self.text_dim, seed=9, lengths=[5, 2])
        image = self.image(2, seed=9)
        before = snapshot((emb, image))
        with torch.no_grad(), global_random_state_unchanged("condition and null (in eval mode)"):
            c.condition(emb, image_context=image)
            c.null(2, like=emb, image_context=image)
        assert_unchanged(before, (emb, image), "the conditioner")
