"""CLIP text embedder: contracts, Hugging Face folders, training objective, tokenizer."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import modiff
from modiff.protocols import Batch
from modiff.testing import build_one
from modiff.testing.contracts import TextEmbedderContract
from modiff_clip.embedder import ClipTextEmbedder

COLOURS = ["red", "green", "blue", "yellow", "purple", "cyan"]
SHAPES = ["circle", "square", "triangle"]
CAPTIONS = [f"a {c} {s} at the {p}" for c in COLOURS for s in SHAPES for p in ("top", "bottom left", "center")]

#: A CLIP small enough to build in milliseconds.
TINY: dict[str, Any] = {
    "width": 32,
    "layers": 2,
    "heads": 2,
    "vision_width": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "projection_dim": 16,
    "patch_size": 8,
    "vocab_size": 600,
}


class Captions:
    """Just enough of a dataset for the factory: captions and an image size."""

    image_size = 32
    num_classes = 0

    def __len__(self) -> int:
        return len(CAPTIONS)

    def captions(self) -> list[str]:
        return list(CAPTIONS)


def context() -> Any:
    return modiff.BuildContext(dataset=Captions())


def build(**params: Any) -> ClipTextEmbedder:
    e = build_one("text_embedder", "clip", {**TINY, **params}, context=context())
    e.eval()
    return e


def random_batch(n: int = 8, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    return Batch(images, [CAPTIONS[(i * 7 + seed) % len(CAPTIONS)] for i in range(n)])


def train_a_little(e: ClipTextEmbedder, steps: int = 2) -> ClipTextEmbedder:
    """A few optimiser steps (so weights differ from any fresh build), then finish."""
    e.train()
    opt = torch.optim.AdamW(e.parameters(), lr=1e-2)
    for step in range(steps):
        loss = e.training_loss(random_batch(seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    e.finish_training([])
    return e.eval()


_FOLDERS: dict[str, Path] = {}


def saved_folder() -> Path:
    """The folder ``save_assets`` writes for a trained tiny CLIP (made once)."""
    if "tiny" not in _FOLDERS:
        root = Path(tempfile.mkdtemp(prefix="modiff-clip-test-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        torch.manual_seed(0)
        train_a_little(build()).save_assets(root)
        _FOLDERS["tiny"] = root
    return _FOLDERS["tiny"]


# ---------------------------------------------------------------- contracts


class TestClipContract(TextEmbedderContract):
    """A small CLIP trained here (two optimiser steps)."""

    plugin = "clip"
    settings: ClassVar[dict[str, Any]] = TINY
    pads_to_longest = True

    def context(self) -> Any:
        return context()

    def prepare(self, component: Any) -> Any:
        return train_a_little(component)


class TestClipSkipLayersContract(TestClipContract):
    """The same with ``skip_layers = 1`` (the penultimate layer, SD's "clip skip")."""

    settings: ClassVar[dict[str, Any]] = {**TINY, "skip_layers": 1}


class TestClipPretrainedContract(TextEmbedderContract):
    """A text encoder loaded from a Hugging Face folder on disk."""

    plugin = "clip"
    pads_to_longest = True

    @property
    def settings(self) -> dict[str, Any]:  # type: ignore[override]
        return {"pretrained": str(saved_folder())}


# ---------------------------------------------------------------- folders


def test_saved_folder_loads_in_transformers_with_identical_outputs() -> None:
    from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

    folder = saved_folder()
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt"} <= {
        p.name for p in folder.iterdir()
    }
    ours = ClipTextEmbedder.from_pretrained(str(folder))
    ours.eval()
    text = CLIPTextModel.from_pretrained(str(folder), local_files_only=True).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    prompts = ["a red circle at the top", "cyan triangle", ""]
    with torch.no_grad():
        mine = ours.embed(prompts)
        inputs = tokenizer(prompts, padding=True, return_tensors="pt")
        theirs = text(**inputs)
    mask = inputs["attention_mask"].bool()
    assert torch.equal(mine.mask, mask)
    torch.testing.assert_close(mine.tokens[mask], theirs.last_hidden_state[mask], rtol=0, atol=1e-6)
    torch.testing.assert_close(mine.pooled, theirs.pooler_output, rtol=0, atol=1e-6)
    full, info = CLIPModel.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert full.config.vision_config.image_size == 32


def test_restored_from_assets_and_from_the_folder_embed_identically(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = train_a_little(build(), steps=3)
    source.save_assets(tmp_path / "assets")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.manual_seed(2)
    restored = build()  # a fresh, different model, as a resumed run builds it
    restored.load_assets(tmp_path / "assets")
    restored.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    restored.eval()
    assert not restored.needs_training
    from_folder = build_one("text_embedder", "clip", {"pretrained": str(tmp_path / "assets")})
    from_folder.eval()
    prompts = ["a red circle at the top", "a blue square at the bottom left", ""]
    with torch.no_grad():
        a, b, c = source.embed(prompts), restored.embed(prompts), from_folder.embed(prompts)
    for other in (b, c):
        assert torch.equal(other.mask, a.mask)
        torch.testing.assert_close(other.tokens, a.tokens, rtol=0, atol=0)
        torch.testing.assert_close(other.pooled, a.pooled, rtol=0, atol=0)


def test_load_assets_rebuilds_another_shape(tmp_path: Path) -> None:
    """A run trained with other sizes restores into a default-built module."""
    source = train_a_little(build(width=16, heads=2, layers=1))
    source.save_assets(tmp_path)
    target = build()
    target.load_assets(tmp_path)
    assert target.dim == 16 and target.text_model.config.num_hidden_layers == 1
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.embed(["red circle"]).pooled, source.embed(["red circle"]).pooled)


def _sd_layout(tmp_path: Path) -> Path:
    """A Stable Diffusion style folder: text_encoder/ with the older
    ``text_model.``-prefixed weight names, tokenizer/ with only vocab.json and merges.txt."""
    from transformers import CLIPTextModel

    folder = saved_folder()
    text = CLIPTextModel.from_pretrained(str(folder), local_files_only=True)
    root = tmp_path / "sd"
    (root / "text_encoder").mkdir(parents=True)
    (root / "tokenizer").mkdir()
    text.config.save_pretrained(str(root / "text_encoder"))
    weights = {f"text_model.{k}": v.contiguous() for k, v in text.state_dict().items()}
    save_file(weights, str(root / "text_encoder" / "model.safetensors"))
    for name in ("vocab.json", "merges.txt"):
        (root / "tokenizer" / name).write_bytes((folder / name).read_bytes())
    return root


def test_stable_diffusion_folder_layout_loads(tmp_path: Path) -> None:
    root = _sd_layout(tmp_path)
    sd = build_one("text_embedder", "clip", {"pretrained": str(root)}).eval()
    ours = ClipTextEmbedder.from_pretrained(str(saved_folder())).eval()
    prompts = ["a red circle at the top", "purple square"]
    with torch.no_grad():
        a, b = sd.embed(prompts), ours.embed(prompts)
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=0)
    assert not sd.needs_training


def test_missing_pretrained_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(modiff.ModiffError, match="never downloads") as info:
        build_one("text_embedder", "clip", {"pretrained": str(tmp_path / "nowhere")})
    assert "nowhere" in str(info.value)
    with pytest.raises(modiff.ModiffError, match="never downloads"):
        build_one("text_embedder", "clip", {"pretrained": "openai/clip-vit-large-patch14"})


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((saved_folder() / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(modiff.WeightsError, match="pickled weights are refused"):
        build_one("text_embedder", "clip", {"pretrained": str(folder)})


def test_incomplete_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "config.json").write_text((saved_folder() / "config.json").read_text())
    weights = load_file(str(saved_folder() / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "layers.1." not in k}, str(folder / "model.safetensors"))
    with pytest.raises(modiff.WeightsError, match="missing"):
        build_one("text_embedder", "clip", {"pretrained": str(folder)})


def test_a_folder_of_another_model_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(modiff.WeightsError, match="'bert'"):
        build_one("text_embedder", "clip", {"pretrained": str(folder)})


def test_loading_is_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    ClipTextEmbedder.from_pretrained(str(saved_folder()))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# ---------------------------------------------------------------- settings


def test_model_sizes_cannot_be_combined_with_pretrained() -> None:
    with pytest.raises(Exception, match="width.*pretrained"):
        build_one("text_embedder", "clip", {"pretrained": str(saved_folder()), "width": 64})


def test_max_tokens_beyond_the_positions_of_a_pretrained_model() -> None:
    with pytest.raises(modiff.PluginError, match="max_tokens = 80 exceeds the 77 positions"):
        build_one("text_embedder", "clip", {"pretrained": str(saved_folder()), "max_tokens": 80})


def test_skip_layers_must_leave_a_layer() -> None:
    with pytest.raises(modiff.PluginError, match="skip_layers = 2 .* use 0 to 1"):
        build(skip_layers=2)


def test_patch_size_must_divide_the_image() -> None:
    with pytest.raises(modiff.PluginError, match="patch_size = 5"):
        build(patch_size=5)


def test_vision_tower_is_sized_for_the_dataset() -> None:
    e = build(patch_size=None)
    assert e.model.config.vision_config.image_size == 32 and e.model.config.vision_config.patch_size == 4
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        e.training_loss(Batch(torch.zeros(2, 3, 16, 16), ["a", "b"]))


# ---------------------------------------------------------------- embedding


def test_skip_layers_reads_an_earlier_hidden_state() -> None:
    torch.manual_seed(0)
    last = train_a_little(build())
    skip = build(skip_layers=1)
    skip.load_state_dict(last.state_dict())
    skip.eval()
    prompts = ["a red circle at the top", "green square"]
    with torch.no_grad():
        a, b = last.embed(prompts), skip.embed(prompts)
        ids, mask = last.tokenize(prompts)
        out = last.text_model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
        expected = last.text_model.final_layer_norm(out.hidden_states[-2])
    torch.testing.assert_close(b.tokens[mask], expected[mask])
    assert not torch.allclose(a.tokens[mask], b.tokens[mask])
    torch.testing.assert_close(a.pooled, b.pooled)  # pooled is always the final output


def test_truncation_keeps_the_end_token() -> None:
    e = build(max_tokens=8)
    with pytest.warns(modiff.TruncationWarning, match="max_tokens = 8"):
        ids, mask = e.tokenize(["red " * 20, "red"])
    assert ids.shape == (2, 8) and int(ids[0, -1]) == e.tokenizer.eos_token_id
    assert mask[0].all() and int(mask[1].sum()) == 3


def test_trained_tokenizer_learns_whole_caption_words() -> None:
    e = build()
    tokens = e.tokenizer.tokenize("a purple triangle at the bottom left")
    assert tokens == ["a</w>", "purple</w>", "triangle</w>", "at</w>", "the</w>", "bottom</w>", "left</w>"]
    assert len(e.tokenizer) <= TINY["vocab_size"]


@functools.cache
def shared_tiny() -> ClipTextEmbedder:
    return build()


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_tokenizer_has_no_unknown_token_for_any_text(text: str) -> None:
    """Every byte has a token, so the end token (also CLIP's unknown token)
    appears only at the end, where the pooled output is read."""
    e = shared_tiny()
    ids = e.tokenizer(text)["input_ids"]
    assert ids[0] == e.tokenizer.bos_token_id and ids[-1] == e.tokenizer.eos_token_id
    assert e.tokenizer.eos_token_id not in ids[1:-1]


def test_without_a_dataset_the_tokenizer_is_bytes_only() -> None:
    e = build_one("text_embedder", "clip", TINY)
    assert len(e.tokenizer) == 514
    # no merges: one token per byte, plus the start and end tokens
    assert e.embed(["a red circle"]).tokens.shape[1] == 1 + 3 + 6 + 2


# ---------------------------------------------------------------- training


def test_training_loss_matches_transformers_clip_loss() -> None:
    """With distinct captions the loss is CLIP's symmetric cross-entropy."""
    e = build()
    batch = random_batch(6)
    assert len(set(batch.captions)) == 6
    ids, mask = e.tokenize(batch.captions)
    with torch.no_grad():
        reference = e.model(input_ids=ids, attention_mask=mask.long(), pixel_values=batch.images, return_loss=True)
        ours = e.training_loss(batch)
    torch.testing.assert_close(ours, reference.loss)


def test_identical_captions_are_matches_of_each_other() -> None:
    """Swapping the images of two pairs with the same caption changes nothing."""
    e = build()
    batch = random_batch(6)
    captions = list(batch.captions)
    captions[3] = captions[0]
    swapped = batch.images.clone()
    swapped[[0, 3]] = batch.images[[3, 0]]
    with torch.no_grad():
        a = e.training_loss(Batch(batch.images, captions))
        b = e.training_loss(Batch(swapped, captions))
    torch.testing.assert_close(a, b)


def test_trainable_stage_protocol() -> None:
    e = build()
    assert isinstance(e, modiff.Trainable) and e.needs_training and not e.joint_training
    assert not isinstance(e, modiff.Fittable)
    loss = e.training_loss(random_batch())
    loss.backward()
    assert e.model.vision_model.embeddings.patch_embedding.weight.grad is not None
    assert e.text_model.embeddings.token_embedding.weight.grad is not None
    e.finish_training([])
    assert not e.needs_training


def test_a_pretrained_text_encoder_cannot_train() -> None:
    e = ClipTextEmbedder.from_pretrained(str(saved_folder()))
    assert not e.needs_training
    with pytest.raises(modiff.ModiffError, match="without a vision tower"):
        e.training_loss(random_batch())


# ---------------------------------------------------------------- packaging


@pytest.mark.slow  # a subprocess
def test_importing_the_plugin_does_not_import_transformers() -> None:
    code = "import sys, modiff_clip; assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_registered_as_a_text_embedder() -> None:
    assert "clip" in modiff.registry().names("text_embedder")
