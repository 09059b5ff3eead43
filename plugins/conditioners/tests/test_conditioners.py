"""What each conditioner computes, its null, its image context and its errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError

import modiff
from modiff.assembly import BuildContext
from modiff.protocols import Conditioning, ConditioningSpec
from modiff.settings import RunSettings
from modiff.testing import build_one
from modiff.testing.contracts.conditioner import FakeTextEmbedder, fake_embedding
from modiff_conditioners.config import ConcatSettings

DIM, SIZE = 6, 4


def make(plugin: str, settings: dict[str, Any] | None = None, *, text: bool = True) -> Any:
    torch.manual_seed(0)
    ctx = BuildContext(run=RunSettings(image_size=SIZE), text_embedder=FakeTextEmbedder(DIM) if text else None)  # type: ignore[arg-type]
    return build_one("conditioner", plugin, settings or {}, context=ctx)


def test_all_five_are_registered() -> None:
    names = modiff.registry().names("conditioner")
    for name in ("cross-attention", "concat", "vector", "hybrid", "none"):
        assert name in names
        assert modiff.registry().lookup("conditioner", name).distribution == "modiff-conditioners"


def test_specs() -> None:
    assert make("cross-attention").spec == ConditioningSpec(0, DIM, None)
    assert make("cross-attention", {"context_dim": 9}).spec == ConditioningSpec(0, 9, None)
    assert make("concat", {"channels": 3, "image_context_channels": 2}).spec == ConditioningSpec(5, None, None)
    assert make("vector").spec == ConditioningSpec(0, None, DIM)
    assert make("hybrid", {"channels": 2, "context_dim": 4}).spec == ConditioningSpec(2, 4, None)
    assert make("none", text=False).spec == ConditioningSpec(0, None, None)
    assert make("cross-attention", {"vector": True}).spec == ConditioningSpec(0, DIM, DIM)
    assert make("hybrid", {"channels": 2, "vector": True}).spec == ConditioningSpec(2, DIM, DIM)


def test_cross_attention_projects_tokens_and_passes_the_mask() -> None:
    c = make("cross-attention", {"context_dim": 5})
    emb = fake_embedding(2, 4, DIM, lengths=[2, 4])
    with torch.no_grad():
        out = c.condition(emb)
        expected = c.to_context(emb.tokens)
    assert torch.equal(out.context_mask, emb.mask)
    torch.testing.assert_close(out.context[emb.mask], expected[emb.mask])
    assert bool((out.context[~emb.mask] == 0).all()), "padding positions are zeroed"


def test_cross_attention_without_projection_passes_tokens_through() -> None:
    c = make("cross-attention", {"projection": False})
    emb = fake_embedding(2, 3, DIM, lengths=[3, 1])
    out = c.condition(emb)
    torch.testing.assert_close(out.context[emb.mask], emb.tokens[emb.mask])
    with pytest.raises(modiff.PluginError, match="context_dim"):
        make("cross-attention", {"projection": False, "context_dim": DIM + 1})


def test_concat_broadcasts_the_projected_pooled_text() -> None:
    c = make("concat", {"channels": 3})
    emb = fake_embedding(2, 4, DIM)
    with torch.no_grad():
        out = c.condition(emb)
        values = c.to_maps(emb.pooled)
    assert out.concat.shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(out.concat, values[:, :, None, None].expand(-1, -1, SIZE, SIZE))


def test_vector_projects_the_pooled_text() -> None:
    c = make("vector", {"vector_dim": 7})
    emb = fake_embedding(3, 2, DIM)
    with torch.no_grad():
        torch.testing.assert_close(c.condition(emb).vector, c.to_vector(emb.pooled))


@pytest.mark.parametrize("plugin", ["cross-attention", "hybrid"])
def test_cross_attention_with_vector_gives_tokens_and_the_pooled_text(plugin: str) -> None:
    c = make(plugin, {"vector": True})
    emb = fake_embedding(3, 2, DIM)
    with torch.no_grad():
        out = c.condition(emb)
        torch.testing.assert_close(out.vector, c.to_vector(emb.pooled))
        torch.testing.assert_close(out.context[emb.mask], c.to_context(emb.tokens)[emb.mask])
        null = c.null(3, like=emb)
    assert null.vector.shape == (3, DIM) and bool((null.vector == 0).all()), "the learned null starts at zero"
    assert "null_vector" in dict(c.named_parameters()), "the null vector is trained through condition dropout"


@pytest.mark.parametrize("plugin", ["cross-attention", "concat", "vector", "hybrid"])
def test_zero_null_is_zeros_and_has_no_weights(plugin: str) -> None:
    c = make(plugin, {"null": "zeros"})
    assert not any(k.startswith("null_") for k in c.state_dict())
    null = c.null(2, like=fake_embedding(2, 5, DIM))
    for name in ("concat", "context", "vector"):
        value = getattr(null, name)
        if value is not None:
            assert bool((value == 0).all()), name
    if null.context_mask is not None:
        assert null.context_mask.tolist() == [[True, False, False, False, False]] * 2


@pytest.mark.parametrize("plugin", ["cross-attention", "concat", "vector", "hybrid"])
def test_learned_null_is_saved_and_trained_through_null(plugin: str) -> None:
    c = make(plugin)
    names = {k for k in c.state_dict() if k.startswith("null_")}
    assert names, "a learned null must be in the state dict"
    null = c.null(3, like=fake_embedding(3, 4, DIM))
    total = sum(getattr(null, n).sum() for n in ("concat", "context", "vector") if getattr(null, n) is not None)
    total.backward()  # type: ignore[union-attr]
    for name, p in c.named_parameters():
        if name.startswith("null_"):
            assert p.grad is not None and bool((p.grad != 0).any()), name


def test_null_rows_mix_with_prompts_per_sample() -> None:
    """What condition dropout does in the core: swap some rows for the null."""
    c = make("hybrid", {"channels": 2})
    emb = fake_embedding(3, 5, DIM, lengths=[5, 2, 3])
    cond, null = c.condition(emb), c.null(3, like=emb)
    drop = torch.tensor([False, True, False])
    mixed = cond.where(drop, null)
    assert torch.equal(mixed.concat[1], null.concat[1]) and torch.equal(mixed.concat[0], cond.concat[0])
    assert torch.equal(mixed.context_mask[1], null.context_mask[1])
    assert mixed.context.shape == (3, 5, DIM)


def test_image_context_follows_its_own_size() -> None:
    c = make("concat", {"channels": 2, "image_context_channels": 1})
    emb = fake_embedding(2, 3, DIM)
    image = torch.randn(2, 1, 6, 6)
    out = c.condition(emb, image_context=image)
    assert out.concat.shape == (2, 3, 6, 6)
    torch.testing.assert_close(out.concat[:, :2], c.condition(emb).concat[:, :2, :1, :1].expand(-1, -1, 6, 6))
    assert torch.equal(out.concat[:, 2:], image)


def test_missing_image_context_is_zeros() -> None:
    c = make("none", {"image_context_channels": 2}, text=False)
    out = c.condition(None, batch_size=3)
    assert out.concat.shape == (3, 2, SIZE, SIZE) and bool((out.concat == 0).all())
    assert c.condition(fake_embedding(3, 2, DIM)).concat.shape == (3, 2, SIZE, SIZE)


@pytest.mark.parametrize(
    "plugin, settings, call, match",
    [
        (
            "concat",
            {},
            lambda c: c.condition(fake_embedding(2, 3, DIM), image_context=torch.zeros(2, 1, 4, 4)),
            "image_context_channels",
        ),
        (
            "concat",
            {"image_context_channels": 2},
            lambda c: c.condition(None, image_context=torch.zeros(2, 3, 4, 4)),
            r"\[2, 2, h, w\]",
        ),
        ("vector", {}, lambda c: c.condition(fake_embedding(2, 3, DIM + 1)), "wide"),
        ("vector", {}, lambda c: c.condition(None), "batch size"),
        ("vector", {}, lambda c: c.condition(fake_embedding(2, 3, DIM), batch_size=3), "inconsistent"),
    ],
)
def test_errors_are_clear(plugin: str, settings: dict[str, Any], call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(make(plugin, settings))


@pytest.mark.parametrize("plugin", ["cross-attention", "concat", "vector", "hybrid"])
def test_text_conditioners_need_a_text_embedder(plugin: str) -> None:
    with pytest.raises(modiff.SettingsError, match="text_embedder"):
        make(plugin, text=False)


def test_unknown_setting_is_an_error() -> None:
    with pytest.raises(ValidationError, match="chanels"):
        ConcatSettings(chanels=3)  # type: ignore[call-arg]


def test_follows_the_module_dtype() -> None:
    c = make("hybrid", {"channels": 2, "image_context_channels": 1}).double()
    emb = fake_embedding(2, 3, DIM)
    emb64 = type(emb)(emb.tokens.double(), emb.mask, emb.pooled.double())
    for out in (c.condition(emb64), c.null(2, like=emb64), c.condition(None, batch_size=2)):
        assert out.concat.dtype == torch.float64 and out.context.dtype == torch.float64


def test_none_ignores_text() -> None:
    c = make("none", text=False)
    assert c.condition(fake_embedding(2, 3, DIM)) == Conditioning()
    assert c.null(2) == Conditioning()
