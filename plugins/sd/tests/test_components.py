"""``sd-clip`` and ``sd-cross-attention`` against modiff's contracts, where SD's semantics allow.

Two contract properties do not hold by design, and are replaced by the SD
behaviour they conflict with:

* every position of an ``sd-clip`` embedding is real (the UNet attends to the
  pad positions' states), so a longer prompt does not have more real tokens;
* the null of ``sd-cross-attention`` is the empty prompt's embedding, whose
  content depends on how many positions it has; it is identical for every
  length SD uses (``max_tokens``), and cut to a shorter ``like``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

import modiff
from _sd_tiny import MAX_TOKENS, make_tokenizer, perturb, quiet_libraries
from modiff.protocols import Conditioning, TextEmbedding
from modiff.testing import build_one
from modiff.testing.contracts import ConditionerContract, TextEmbedderContract
from modiff.testing.contracts.conditioner import fake_embedding

# The tiny tokenizer has 12 positions: longer contract prompts are truncated (with the warning the contract expects).
pytestmark = pytest.mark.filterwarnings("ignore:.*CLIP tokens")


@functools.cache
def clip_folder(width: int = 32) -> Path:
    """A tiny CLIP text encoder with weights, and its tokenizer, in one Hugging Face folder."""
    from transformers import CLIPTextConfig, CLIPTextModel

    quiet_libraries()
    folder = Path(tempfile.mkdtemp(prefix="modiff-sd-clip-"))
    atexit.register(shutil.rmtree, folder, True)
    tok = make_tokenizer()
    torch.manual_seed(1)
    model = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=MAX_TOKENS, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
    )
    perturb(model, 3)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


class TestSdClipContract(TextEmbedderContract):
    plugin = "sd-clip"
    distinct_prompts = ("a red circle", "a blue square on the left")

    @property
    def settings(self) -> dict[str, Any]:  # type: ignore[override]
        return {"pretrained": str(clip_folder())}

    def test_shapes_and_mask(self) -> None:
        """SD's shapes: every prompt is ``max_tokens`` long and every position is real."""
        e = self.build()
        out = self.embed(e, self.prompts)
        assert out.tokens.shape == (len(self.prompts), MAX_TOKENS, e.dim) == (len(self.prompts), e.max_tokens, 32)
        assert out.mask.dtype == torch.bool and bool(out.mask.all())
        assert out.pooled.shape == (len(self.prompts), e.dim)


class TestSdCrossAttentionContract(ConditionerContract):
    plugin = "sd-cross-attention"
    text_dim = 32

    def context(self) -> Any:
        ctx = super().context()
        ctx.text_embedder = build_one("text_embedder", "sd-clip", {"pretrained": str(clip_folder())}).eval()
        return ctx

    def test_null_is_one_row_as_long_as_the_prompts(self) -> None:  # type: ignore[override]
        c = self.build()
        text = c.text_embedder
        with torch.no_grad():
            prompts = text.embed(["a red circle", "a blue square"])
            null = c.null(2, like=prompts)
            plain = c.condition(None, batch_size=3)
            empty = text.embed([""])
            short = c.null(1, like=fake_embedding(1, 5, self.text_dim))
        assert null.context.shape == (2, MAX_TOKENS, self.text_dim)
        for i in range(2):
            torch.testing.assert_close(null.context[i], empty.tokens[0])
        torch.testing.assert_close(plain.context, empty.tokens.expand(3, -1, -1))
        torch.testing.assert_close(short.context[0], empty.tokens[0, :5])


def test_conditioning_is_the_text_unchanged() -> None:
    c = TestSdCrossAttentionContract().build()
    emb = fake_embedding(2, 6, 32, lengths=[6, 3])
    out = c.condition(emb)
    assert out.context is emb.tokens and torch.equal(out.context_mask, emb.mask)
    assert c.state_dict() == {} and c.spec.context_dim == 32 and not c.spec.concat_channels


def test_conditioner_refuses_what_sd_does_not_have() -> None:
    c = TestSdCrossAttentionContract().build()
    with pytest.raises(ValueError, match="no image context"):
        c.condition(fake_embedding(1, 4, 32), image_context=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="32"):
        c.condition(fake_embedding(1, 4, 16))
    with pytest.raises(modiff.SettingsError, match="needs a text embedder"):
        build_one("conditioner", "sd-cross-attention")


def test_padding_states_are_what_the_encoder_computes_for_pad_tokens() -> None:
    """Not zeros: the UNet was trained on CLIP's states at the pad positions."""
    from transformers import CLIPTextModel

    e = build_one("text_embedder", "sd-clip", {"pretrained": str(clip_folder())}).eval()
    reference = CLIPTextModel.from_pretrained(str(clip_folder())).eval()
    tok = e.tokenizer
    ids = tok(["a red circle"], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    with torch.no_grad():
        out = e.embed(["a red circle"])
        expected = reference(ids).last_hidden_state
    torch.testing.assert_close(out.tokens, expected, rtol=0, atol=1e-6)
    assert float(out.tokens[0, -1].abs().max()) > 0.1


def test_a_long_prompt_warns_with_the_core_truncation_category() -> None:
    """One category for every embedder: ``modiff.TruncationWarning``."""
    e = build_one("text_embedder", "sd-clip", {"pretrained": str(clip_folder())}).eval()
    with pytest.warns(modiff.TruncationWarning, match="CLIP tokens"), torch.no_grad():
        out = e.embed(["red " * 40])
    assert out.tokens.shape[1] == MAX_TOKENS


def test_sd_clip_settings_are_checked() -> None:
    with pytest.raises(modiff.ModiffError, match="is not a folder"):
        build_one("text_embedder", "sd-clip", {"pretrained": "/nonexistent/clip"})
    with pytest.raises(modiff.PluginError, match=f"exceeds the {MAX_TOKENS} positions"):
        build_one("text_embedder", "sd-clip", {"pretrained": str(clip_folder()), "max_tokens": MAX_TOKENS + 1})


def test_sd_clip_refuses_weights_that_miss_a_text_model_tensor(tmp_path: Path) -> None:
    """sd-clip loads through modiff-clip's one loader: weights that do not cover the
    encoder are an error naming the tensor, not a tensor left at its random start."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(clip_folder(), folder)
    weights = load_file(str(folder / "model.safetensors"))
    del weights["final_layer_norm.weight"]
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(modiff.WeightsError, match=r"1 missing, e\.g\. .*final_layer_norm\.weight"):
        build_one("text_embedder", "sd-clip", {"pretrained": str(folder)})


def test_sd_clip_refuses_pickled_weights(tmp_path: Path) -> None:
    """Pickled weights are refused, not skipped for an encoder shaped by the config alone."""
    folder = tmp_path / "pickled"
    shutil.copytree(clip_folder(), folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(modiff.WeightsError, match="pickled weights are refused"):
        build_one("text_embedder", "sd-clip", {"pretrained": str(folder)})


def test_null_context_carries_the_like_dtype() -> None:
    c = TestSdCrossAttentionContract().build()
    tokens = torch.zeros(1, MAX_TOKENS, 32, dtype=torch.bfloat16)
    like = TextEmbedding(tokens, torch.ones(1, MAX_TOKENS, dtype=torch.bool), torch.zeros(1, 32))
    null = c.null(1, like=like)
    assert isinstance(null, Conditioning) and null.context.dtype == torch.bfloat16
