"""The text transformer's own behaviour: vocabulary, bidirectional context,
masking, warnings, settings errors, determinism."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import modiff
from modiff import TruncationWarning, UnknownWordWarning
from modiff.testing import build_one
from modiff_text_transformer.embedder import TextTransformer
from modiff_text_transformer.vocabulary import FILE, SPECIALS, START, Vocabulary, tokenize

COLOURS = ["red", "green", "blue", "yellow", "purple", "cyan"]
SHAPES = ["circle", "square", "triangle"]
PLACES = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
#: Captions in the shapes world's templates, one and two objects (every colour, shape and place occurs).
CAPTIONS = [
    f"a {c} {s} at the {p}"
    + ("" if i % 2 else f" and a {COLOURS[(i + 1) % 6]} {SHAPES[(i + 2) % 3]} in the {PLACES[i % 9]}")
    if i % 3 else f"{p}: a {c} {s}; {PLACES[(i + 4) % 9]}: a {COLOURS[(i + 3) % 6]} {SHAPES[(i + 1) % 3]}"
    for i, (c, s, p) in enumerate((COLOURS[i % 6], SHAPES[i % 3], PLACES[i % 9]) for i in range(120))
]


def fitted(**params: Any) -> TextTransformer:
    e = build_one("text_embedder", "transformer", {"width": 32, "depth": 2, "heads": 4, **params})
    e.fit(CAPTIONS)
    return e.eval()


# ---------------------------------------------------------------- vocabulary


def test_tokens_keep_punctuation_and_fold_case() -> None:
    assert tokenize("Top left: a RED circle; bottom, a cyan square") == [
        "top", "left", ":", "a", "red", "circle", ";", "bottom", ",", "a", "cyan", "square"]
    assert tokenize("Red", lowercase=False) == ["Red"]


def test_vocabulary_is_a_pure_function_of_the_corpus() -> None:
    corpus = ["b a a", "c b a", "d"]
    v = Vocabulary.fit(corpus, lowercase=True)
    assert v.words == ["a", "b", "c", "d"]  # by count, ties alphabetical
    assert Vocabulary.fit(reversed(corpus), lowercase=True).words == v.words
    assert Vocabulary.fit(corpus, lowercase=True, min_count=2).words == ["a", "b"]
    assert Vocabulary.fit(corpus, lowercase=True, max_size=1).words == ["a"]


def test_every_prompt_starts_with_the_start_token() -> None:
    v = Vocabulary(["red", "circle"])
    assert v.ids("") == ([START], [])
    ids, unknown = v.ids("red blob")
    assert ids[0] == START and ids[1] == len(SPECIALS) and unknown == ["blob"]


def test_vocabulary_file_is_json_and_round_trips(tmp_path: Path) -> None:
    e = fitted()
    e.save_assets(tmp_path)
    data = json.loads((tmp_path / FILE).read_text())
    assert data["words"] == e.vocabulary.words and data["fitted"] is True
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "content, message",
    [(None, "missing"), ("not json", "unreadable"), ('{"format": "other"}', "not a text-transformer vocabulary"),
     ('{"format": "modiff-text-transformer-vocabulary/1", "words": [1]}', "list of strings")],
)
def test_broken_vocabulary_files_are_named(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / FILE).write_text(content)
    with pytest.raises(modiff.WeightsError, match=message):
        fitted().load_assets(tmp_path)


# ---------------------------------------------------------------- the model


def test_a_colour_token_sees_the_place_named_after_it() -> None:
    """Bidirectional: the vector of "red" depends on words that come later
    (a causal tower's could not), and padding after the prompt changes nothing."""
    e = fitted()
    with torch.no_grad():
        out = e.embed(["a red circle at the top left", "a red circle at the bottom right and a blue square"])
    red = 2  # <start> a red
    assert not torch.allclose(out.tokens[0, red], out.tokens[1, red], atol=1e-4)
    causal_prefix = fitted(depth=0)  # no attention: a word's vector is its own (plus its position)
    with torch.no_grad():
        plain = causal_prefix.embed(["a red circle at the top left", "a red circle at the bottom right"])
    torch.testing.assert_close(plain.tokens[0, red], plain.tokens[1, red])


def test_padding_is_zero_and_never_attended() -> None:
    e = fitted()
    with torch.no_grad():
        out = e.embed(["a red circle", "a blue square at the bottom left"])
        # garbage in the padding rows of the word table must not reach real tokens
        e.words.weight[0].fill_(1e3)
        again = e.embed(["a red circle", "a blue square at the bottom left"])
    assert bool((out.tokens[~out.mask] == 0).all())
    torch.testing.assert_close(again.tokens, out.tokens)


def test_pooled_is_the_mean_of_real_tokens_or_the_start_token() -> None:
    with torch.no_grad():
        mean = fitted().embed(["a red circle", ""])
        start = fitted(pooled="start").embed(["a red circle", ""])
    torch.testing.assert_close(mean.pooled[0], mean.tokens[0, :4].mean(0))
    torch.testing.assert_close(start.pooled[0], start.tokens[0, 0])
    torch.testing.assert_close(mean.pooled[1], mean.tokens[1, 0])


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    torch.manual_seed(1)
    a = fitted()
    torch.manual_seed(2)  # the run's RNG does not matter: the plugin draws from its own seed
    b = fitted()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = fitted(seed=3)
    assert not torch.equal(a.words.weight, c.words.weight)
    assert not torch.equal(a.layers[0].qkv.weight, c.layers[0].qkv.weight)


def test_fit_resizes_the_word_table_and_marks_it_fitted() -> None:
    e = build_one("text_embedder", "transformer", {"width": 16, "depth": 1, "heads": 2})
    assert e.needs_training and e.joint_training and e.words.num_embeddings == len(SPECIALS)
    e.fit(CAPTIONS)
    assert not e.needs_training and e.words.num_embeddings == len(SPECIALS) + len(e.vocabulary.words)
    assert {"red", "purple", "triangle", ";", ":"} <= set(e.vocabulary.words)


def test_unknown_words_warn_once_each() -> None:
    e = fitted()
    with pytest.warns(UnknownWordWarning, match="'mauve'"):
        e.embed(["a mauve circle"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e.embed(["a mauve square"])  # already reported
    unfitted = build_one("text_embedder", "transformer", {"width": 16, "depth": 1, "heads": 2})
    with pytest.warns(UnknownWordWarning, match="no vocabulary yet"):
        unfitted.embed(["a red circle"])


def test_truncation_keeps_the_first_tokens_and_warns() -> None:
    e = fitted(max_tokens=4)
    with pytest.warns(TruncationWarning, match="max_tokens = 4"):
        out = e.embed(["a red circle at the top left"])
    assert out.tokens.shape[1] == 4 and bool(out.mask.all())


def test_gradients_reach_words_positions_and_layers() -> None:
    e = fitted().train()
    prompt = ["a red circle at the top left and a blue square at the bottom right"]
    tokens = e.embed(prompt).tokens
    (tokens * torch.randn(tokens.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    params = dict(e.named_parameters())
    for name in ("words.weight", "positions", "layers.0.qkv.weight", "layers.0.out.weight", "layers.1.mlp.0.weight",
                 "layers.1.mlp.2.weight", "norm.weight"):
        assert params[name].grad is not None and bool(params[name].grad.abs().sum() > 0), name


def test_an_untrained_embedder_already_tells_the_words_apart() -> None:
    """Before any training the tokens of a prompt must differ (the denoiser learns from them at once):
    an untrained attention layer that averages over the prompt must not swamp the words."""
    e = fitted()
    with torch.no_grad():
        out = e.embed(["a red circle at the top left"])
    t = torch.nn.functional.normalize(out.tokens[0][out.mask[0]], dim=-1)
    cos = t @ t.T
    off_diagonal = (cos.sum() - cos.diagonal().sum()) / (cos.numel() - len(cos))
    assert float(off_diagonal) < 0.3
    with torch.no_grad():
        red, blue = e.embed(["a red circle", "a blue circle"]).tokens[:, 2]
    assert float(torch.nn.functional.cosine_similarity(red, blue, dim=0)) < 0.5


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "setting, words",
    [("heads=5", ["heads = 5", "width = 64", "[1, 2, 4, 8, 16, 32]"]),
     ('pooled="max"', ["pooled", "'mean' or 'start'"]),
     ("depth=-1", ["depth", "greater than or equal to 0"]),
     ("max_tokens=1", ["max_tokens", "greater than or equal to 2"]),
     ("dropout=1.0", ["dropout", "less than 1"]),
     ('pretext="grid"', ["pretext", "'none' or 'layout'"]),
     ("pretext_grid=1", ["pretext_grid", "greater than or equal to 2"]),
     ('joint_training=false, text_embedder.pretext="none"',
      ["joint_training = false", "pretext = 'none'", "pretext = 'layout'"]),
     ('joint_training="sometimes"', ["joint_training", "valid boolean"]),
     ('depth=0, text_embedder.pretext="layout", text_embedder.heads=3', ["heads = 3", "width = 64"])],
)
def test_bad_settings_name_the_key_and_what_is_allowed(setting: str, words: list[str], capsys: Any) -> None:
    from modiff.cli import main

    demo = Path(modiff.__file__).parent / "configs" / "demo.toml"
    sets = [f"text_embedder.{one}" if not one.startswith("text_embedder.") else one for one in setting.split(", ")]
    code = main(["settings", "show", str(demo), "--set", 'text_embedder.plugin="transformer"',
                 *(arg for one in sets for arg in ("--set", one))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


# ---------------------------------------------------------------- layout pretext


def two_place_world() -> tuple[list[str], torch.Tensor]:
    """Two objects, one in each half (top, bottom), in two of three colours: 6 captions and their
    8 x 8 images. Every colour occurs in both places, so only a caption's word order says which
    colour is where: a bag of words cannot fit it."""
    rgb = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}
    captions, images = [], []
    for top in rgb:
        for bottom in rgb:
            if top == bottom:
                continue
            captions.append(f"a {top} square at the top and a {bottom} circle at the bottom")
            image = torch.empty(3, 8, 8)
            image[:, :4] = torch.tensor(rgb[top])[:, None, None]
            image[:, 4:] = torch.tensor(rgb[bottom])[:, None, None]
            images.append(image)
    return captions, torch.stack(images)


def test_the_layout_pretext_teaches_which_colour_is_where() -> None:
    """After the pretext stage the decoder's top half of "red top, blue bottom" is red and of
    "blue top, red bottom" blue: the tokens carry each colour with its place."""
    from modiff.protocols import Batch

    captions, images = two_place_world()
    e = build_one("text_embedder", "transformer",
                  {"width": 32, "depth": 2, "heads": 4, "pretext": "layout", "pretext_grid": 2})
    e.fit(captions)
    assert e.needs_training, "fitted, the pretext stage is still to come"
    first = e.training_loss(Batch(images, captions)).item()
    opt = torch.optim.AdamW(e.parameters(), lr=3e-3)
    for _ in range(150):
        loss = e.training_loss(Batch(images, captions))
        opt.zero_grad()
        loss.backward()
        opt.step()
    e.finish_training([])
    assert not e.needs_training
    assert float(loss) < 0.05 * first
    with torch.no_grad():
        maps = e.eval().pretext(e.embed(["a red square at the top and a blue circle at the bottom",
                                         "a blue square at the top and a red circle at the bottom"]))
    top_red, top_blue = maps[:, 0, 0].mean(-1), maps[:, 2, 0].mean(-1)  # red and blue channels, top row
    assert top_red[0] > 0.5 > -0.5 > top_red[1]
    assert top_blue[1] > 0.5 > -0.5 > top_blue[0]


def test_without_the_pretext_there_is_no_stage_to_train() -> None:
    e = build_one("text_embedder", "transformer", {"width": 16, "depth": 1, "heads": 2})
    e.fit(CAPTIONS)
    assert not e.needs_training and not hasattr(e, "training_loss")
