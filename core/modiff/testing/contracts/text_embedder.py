"""Contract for :class:`modiff.protocols.TextEmbedder`.

Subclass :class:`TextEmbedderContract`, set ``plugin`` and ``settings``, and
override:

* ``context()`` to hand the factory a dataset (a caption corpus) when it needs
  one;
* ``prepare(component)`` when a freshly built component must be fitted or
  trained before it is useful (word2vec fits on captions); the restore test
  checks that a *fresh* build restored from ``save_assets`` + ``state_dict``
  embeds exactly like the prepared one, which is what resuming a run does;
* ``distinct_prompts`` when your vocabulary cannot tell the default pair apart;
* ``pads_to_longest = True`` if your embedder pads a batch to its longest
  prompt rather than to ``max_tokens`` (then ``L`` is checked exactly).

What every text embedder is held to: shapes and dtypes; a real token in every
row (an empty prompt too, so attention never runs over nothing); padding and
batch invariance (a prompt embeds the same alone or next to any others);
determinism without global random draws and without state kept between
calls; outputs in the weights' dtype and on their device; truncation with a
warning; restoring from saved state; and no exception for any unicode prompt.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings

from ...protocols import HasAssets, TextEmbedder, TextEmbedding, TrainsJointly, trains_jointly
from ..strategies import prompt_batches
from .base import CONTRACT_SETTINGS, Contract
from .checks import DeviceCheck, floating_dtype_of, global_random_state_unchanged, has_tensors

_PICKLE_MAGIC = {bytes([0x80, p]) for p in range(2, 6)}

#: The shared contract settings, plus: several subclasses of this contract in
#: one module run the same inherited Hypothesis test from different classes
#: ("executors"), which is intended here, not a correctness problem.
_SETTINGS = hsettings(
    CONTRACT_SETTINGS,
    suppress_health_check=[*CONTRACT_SETTINGS.suppress_health_check, HealthCheck.differing_executors],
)


class TextEmbedderContract(Contract):
    """Every text embedder: shapes, mask, padding and batch invariance,
    determinism, truncation, restoring, any prompt."""

    role: ClassVar[str] = "text_embedder"
    prompts: ClassVar[list[str]] = ["a red circle", "a large blue square at the bottom left", ""]
    #: Two prompts whose embeddings must differ.
    distinct_prompts: ClassVar[tuple[str, str]] = ("a red circle", "a blue square")
    #: ``L`` equals the longest prompt's token count (not always ``max_tokens``).
    pads_to_longest: ClassVar[bool] = False
    #: Tolerance for "the same vectors" under different padding / batching.
    invariance_atol: ClassVar[float] = 1e-4

    # ----------------------------------------------------------- building

    def prepare(self, component: Any) -> Any:
        """Make a freshly built component ready to embed (fit it, load it...)."""
        return component

    def build(self, **overrides: Any) -> Any:
        """A fresh component, prepared (see :meth:`prepare`)."""
        return self.prepare(super().build(**overrides))

    def build_unprepared(self, **overrides: Any) -> Any:
        """What the factory returns, before any fitting: what a run restores into."""
        return super().build(**overrides)

    def embed(self, e: TextEmbedder, prompts: list[str]) -> TextEmbedding:
        with torch.no_grad():
            return e.embed(prompts)

    def assert_same_row(self, a: TextEmbedding, i: int, b: TextEmbedding, j: int) -> None:
        """Row ``i`` of ``a`` and row ``j`` of ``b`` hold the same real tokens and pooled vector."""
        n = int(a.mask[i].sum())
        assert int(b.mask[j].sum()) == n, "the number of real tokens depends on the rest of the batch"
        ta = a.tokens[i][a.mask[i]]
        tb = b.tokens[j][b.mask[j]]
        tol = self.invariance_atol
        torch.testing.assert_close(ta, tb, rtol=tol, atol=tol)
        torch.testing.assert_close(a.pooled[i], b.pooled[j], rtol=tol, atol=tol)

    # ----------------------------------------------------------- tests

    def test_is_a_text_embedder(self) -> None:
        e = self.build()
        assert isinstance(e, TextEmbedder)
        assert isinstance(e.dim, int) and isinstance(e.max_tokens, int)
        assert e.dim > 0 and e.max_tokens > 0
        if hasattr(e, "needs_training"):
            assert isinstance(e.needs_training, bool)
            assert not e.needs_training, "a prepared component must not need training"
        if isinstance(e, TrainsJointly):
            assert isinstance(e.joint_training, bool), (
                f"joint_training is {e.joint_training!r}; it must be a bool "
                "(the core reads any non-empty value as true)"
            )

    def test_shapes_and_mask(self) -> None:
        e = self.build()
        out = self.embed(e, self.prompts)
        b = len(self.prompts)
        assert out.tokens.dim() == 3 and out.tokens.shape[0] == b and out.tokens.shape[2] == e.dim
        assert out.tokens.shape[1] <= e.max_tokens
        assert out.tokens.is_floating_point() and out.pooled.is_floating_point()
        assert out.mask.shape == out.tokens.shape[:2] and out.mask.dtype == torch.bool
        assert out.pooled.shape == (b, e.dim)
        assert bool(torch.isfinite(out.tokens).all()) and bool(torch.isfinite(out.pooled).all())
        lengths = out.mask.sum(1)
        assert int(lengths[1]) > int(lengths[0]), "a longer prompt must have more real tokens"
        if self.pads_to_longest:
            assert out.tokens.shape[1] == int(lengths.max()), "the batch must be padded to its longest prompt"

    def test_every_prompt_has_a_real_token(self) -> None:
        """Empty and blank prompts too: a row without real tokens would make
        masked attention over the text undefined (a softmax over nothing)."""
        e = self.build()
        out = self.embed(e, ["", "   ", "\n\t", self.prompts[0]])
        assert bool(out.mask.any(1).all())
        assert bool(torch.isfinite(out.pooled).all())

    def test_padding_and_batch_invariance(self) -> None:
        e = self.build()
        alone = self.embed(e, [self.prompts[0]])
        batched = self.embed(e, self.prompts)
        self.assert_same_row(alone, 0, batched, 0)

    @_SETTINGS
    @given(prompts=prompt_batches(min_size=2, max_size=4))
    def test_batch_independence(self, prompts: list[str]) -> None:
        """Each prompt embeds the same alone as next to any other prompts."""
        e = self.shared()
        batched = self.embed(e, prompts)
        for i, p in enumerate(prompts):
            self.assert_same_row(self.embed(e, [p]), 0, batched, i)

    def test_distinct_prompts_differ(self) -> None:
        e = self.build()
        out = self.embed(e, list(self.distinct_prompts))
        assert not torch.allclose(out.pooled[0], out.pooled[1], atol=1e-6, rtol=0)

    def test_deterministic(self) -> None:
        """The same prompts embed the same twice, and embedding draws nothing from the
        global random state (a dropout left on in eval mode, random vectors for new words)."""
        e = self.build()
        a = self.embed(e, self.prompts)
        with global_random_state_unchanged("embed (in eval mode)"):
            b = self.embed(e, self.prompts)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled) and torch.equal(a.mask, b.mask)

    def test_no_state_between_calls(self) -> None:
        """What a prompt embeds to does not depend on what the embedder embedded before
        (no vocabulary grown while embedding, no length or cache kept from an earlier batch)."""
        seasoned = self.build()
        self.embed(seasoned, [self.distinct_prompts[1], "zebra " * 3, ""])
        self.embed(seasoned, [self.distinct_prompts[0]])
        a = self.embed(seasoned, self.prompts)
        b = self.embed(self.build(), self.prompts)
        assert torch.equal(a.mask, b.mask), "the mask depends on earlier calls"
        torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=self.invariance_atol)
        torch.testing.assert_close(a.pooled, b.pooled, rtol=0, atol=self.invariance_atol)

    def test_dtype_follows_the_module(self) -> None:
        """Tokens and pooled vectors have the dtype of the embedder's weights: float32 as
        built, float64 after ``.to(torch.float64)`` (float32 for an embedder without weights)."""
        e = self.build()
        dtype = floating_dtype_of(e) or torch.float32
        out = self.embed(e, self.prompts)
        for name in ("tokens", "pooled"):
            got = getattr(out, name).dtype
            assert got == dtype, f"{name} is {got}; the embedder's weights are {dtype}"
        if floating_dtype_of(e) is None:
            pytest.skip("no floating weights: nothing to convert to float64 (float32 checked)")
        out = self.embed(e.to(torch.float64), self.prompts)
        for name in ("tokens", "pooled"):
            got = getattr(out, name).dtype
            assert got == torch.float64, f"after .to(torch.float64), {name} is {got}"

    def test_outputs_follow_the_device(self) -> None:
        """After ``.to(device)`` (a GPU, or torch's meta device without one) every output is there."""
        e = self.build()
        if not has_tensors(e):
            pytest.skip("no weights or buffers: the embedder has no device to follow")
        check = DeviceCheck()
        e.to(check.device)
        check.check("embed", lambda: self.embed(e, self.prompts))
        check.finish()

    def test_long_prompt_is_truncated_with_a_warning(self) -> None:
        e = self.build()
        if e.max_tokens > 4096:
            pytest.skip(f"max_tokens = {e.max_tokens} is too large to exceed cheaply")
        long_prompt = " ".join(["red"] * (2 * e.max_tokens + 5))
        # Warnings an embedder gives once (an unknown word) are used up first,
        # so the warning below can only be about the length.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.embed(e, ["red", "a red circle"])
        with pytest.warns(UserWarning):
            out = self.embed(e, [long_prompt, "a red circle"])
        assert out.tokens.shape[1] <= e.max_tokens
        assert int(out.mask[0].sum()) <= e.max_tokens

    def test_restores_from_assets_and_state_dict(self, tmp_path: Path) -> None:
        """What resuming a run does: a fresh build, ``load_assets``, then
        ``load_state_dict`` from safetensors, embeds exactly like the original."""
        from safetensors.torch import load_file, save_file

        source = self.build()
        if not isinstance(source, torch.nn.Module):
            pytest.skip("not a torch module: nothing to restore")
        assets = tmp_path / "assets"
        if isinstance(source, HasAssets):
            assets.mkdir()
            source.save_assets(assets)
            for f in assets.rglob("*"):
                if f.is_file() and f.suffix != ".safetensors":
                    assert f.read_bytes()[:2] not in _PICKLE_MAGIC, f"{f.name} is a pickle"
                elif f.is_file():
                    load_file(str(f))  # a safetensors file must be one
        weights = tmp_path / "weights.safetensors"
        save_file({k: v.detach().contiguous() for k, v in source.state_dict().items()}, str(weights))

        target = self.build_unprepared()
        with torch.no_grad():  # make sure loading, not a lucky identical init, sets every parameter
            for p in target.parameters():
                p.add_(torch.randn_like(p))
        if isinstance(target, HasAssets):
            target.load_assets(assets)
        target.load_state_dict(load_file(str(weights)), strict=True)
        target.eval()
        if getattr(source, "needs_training", None) is False:
            assert target.needs_training is False, "a restored component must not ask to be trained again"
        prompts = [*self.prompts, *self.distinct_prompts]
        a, b = self.embed(source, prompts), self.embed(target, prompts)
        assert torch.equal(a.mask, b.mask)
        torch.testing.assert_close(b.tokens, a.tokens, rtol=0, atol=1e-6)
        torch.testing.assert_close(b.pooled, a.pooled, rtol=0, atol=1e-6)

    def test_joint_training_reaches_parameters(self) -> None:
        """An embedder that asks to be trained with the denoiser
        (``joint_training = True``, :class:`modiff.protocols.TrainsJointly`) is a
        module whose embeddings, in train mode, pass gradients to its parameters:
        the denoiser stage optimises them on the task's loss, and would otherwise
        train nothing while paying for an embedding every step."""
        e = self.build()
        if not trains_jointly(e):
            pytest.skip("not trained jointly with the denoiser")
        assert isinstance(e, torch.nn.Module), "joint_training = True, but the embedder is not a torch module"
        e.train()
        out = e.embed(self.prompts)
        (out.tokens.square().sum() + out.pooled.square().sum()).backward()
        grads = [p.grad for p in e.parameters() if p.requires_grad]
        assert grads, "joint_training = True, but the embedder has no parameter that requires a gradient"
        assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), (
            "joint_training = True, but no gradient reaches the embedder's parameters from its embeddings"
        )

    @_SETTINGS
    @given(prompts=prompt_batches())
    @example(prompts=["ünïcödé 🙂", "", "a\tb\n", "\u200b"])  # always tried: non-ASCII, blank, control
    def test_any_prompt(self, prompts: list[str]) -> None:
        e = self.shared()
        out = self.embed(e, prompts)
        assert out.tokens.shape[0] == len(prompts) and out.tokens.shape[1] <= e.max_tokens
        assert bool(out.mask.any(1).all())
        assert bool(torch.isfinite(out.tokens).all()) and bool(torch.isfinite(out.pooled).all())
