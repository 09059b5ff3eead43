"""word2vec text embedder: contract, loading vector files, fitting, warnings."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors, Word2Vec
from gensim.test.utils import datapath
from hypothesis import given, settings
from hypothesis import strategies as st

import modiff
from modiff.testing import build_one
from modiff.testing.contracts import TextEmbedderContract
from modiff_word2vec.embedder import UnknownWordWarning, Word2VecEmbedder, sinusoidal_positions
from modiff_word2vec.text import tokenize
from modiff_word2vec.vectors import detect_format

COLOURS = ["red", "green", "blue", "yellow", "purple", "cyan"]
SHAPES = ["circle", "square", "triangle"]
PLACES = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
TEMPLATES = ["a {size} {c} {s} in the {p}", "{c} {s}, {p}", "there is a {size} {c} {s} at the {p}"]


def captions(n: int = 600) -> list[str]:
    """Templated captions like the shapes world's, deterministic."""
    out = []
    for i in range(n):
        out.append(
            TEMPLATES[i % 3].format(
                size=("small", "large")[(i // 3) % 2],
                c=COLOURS[(i * 7) % 6],
                s=SHAPES[(i * 5) % 3],
                p=PLACES[(i * 11) % 9],
            )
        )
    return out


CAPTIONS = captions()


def build(**params: Any) -> Word2VecEmbedder:
    e = build_one("text_embedder", "word2vec", params)
    e.eval()
    return e


def fitted(**params: Any) -> Word2VecEmbedder:
    e = build(**{"dim": 16, "epochs": 5, **params})
    e.fit(CAPTIONS)
    return e


def test_a_long_prompt_warns_with_the_core_truncation_category() -> None:
    """One category for every embedder: ``modiff.TruncationWarning``."""
    e = fitted(max_tokens=4)
    with pytest.warns(modiff.TruncationWarning, match="max_tokens = 4"), torch.no_grad():
        out = e.embed(["a large red circle in the top left"])
    assert out.tokens.shape[1] == 4


# ---------------------------------------------------------------- contracts


class TestWord2VecContract(TextEmbedderContract):
    """Fitted on captions, with two trainable self-attention layers."""

    plugin = "word2vec"
    settings: ClassVar[dict[str, Any]] = {"dim": 16, "epochs": 5, "depth": 2, "heads": 4}
    pads_to_longest = True

    def prepare(self, component: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownWordWarning)
            component.fit(CAPTIONS)
        return component


class TestWord2VecFromFileContract(TextEmbedderContract):
    """Plain vectors (depth 0) read from gensim's own word2vec text file (1,762 words x 10)."""

    plugin = "word2vec"
    settings: ClassVar[dict[str, Any]] = {"vectors": datapath("lee_fasttext.vec")}
    pads_to_longest = True
    prompts: ClassVar[list[str]] = ["the government", "the government said on monday that police", ""]
    distinct_prompts = ("the government", "the police")


# ---------------------------------------------------------------- files


@pytest.fixture(scope="module")
def gensim_kv() -> KeyedVectors:
    model = Word2Vec([tokenize(c) for c in CAPTIONS], vector_size=12, min_count=1, epochs=3, seed=3, workers=1)
    return model.wv


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.parametrize("suffix", ["", ".txt"])
def test_file_written_by_gensim_gives_the_same_vectors(
    gensim_kv: KeyedVectors, tmp_path: Path, binary: bool, suffix: str
) -> None:
    path = tmp_path / f"vectors{'.bin' if binary and suffix else suffix}"
    gensim_kv.save_word2vec_format(str(path), binary=binary)
    assert detect_format(path) == ("binary" if binary else "text")
    e = build(vectors=str(path), positional=False)
    assert e.dim == 12 and not e.needs_training
    assert e.words == list(gensim_kv.index_to_key)
    for word in gensim_kv.index_to_key:
        torch.testing.assert_close(e.vector(word), torch.from_numpy(gensim_kv[word]), rtol=0, atol=0)
    # Plain vectors (depth 0, no positions): the tokens are the file's vectors, scaled by one RMS.
    out = e.embed(["red circle"])
    rms = float(np.sqrt(np.mean(np.square(gensim_kv.vectors.astype(np.float64)))))
    expected = torch.from_numpy(np.stack([gensim_kv["red"], gensim_kv["circle"]])) / rms
    torch.testing.assert_close(out.tokens[0], expected)
    torch.testing.assert_close(out.pooled[0], expected.mean(0))


def test_glove_text_without_header_loads() -> None:
    e = build(vectors=datapath("test_glove.txt"))
    kv = KeyedVectors.load_word2vec_format(datapath("test_glove.txt"), no_header=True)
    assert e.dim == kv.vector_size
    torch.testing.assert_close(e.vector("the"), torch.from_numpy(kv["the"]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("red\ncircle\nsquare\n", "line 1 has a word and no numbers"),  # gensim: three 0-dimensional vectors
        ("red 0.1 0.2\ncircle 0.3\n", "line 2 has 1 numbers but line 1 has 2"),
        ("a red circle\nblue square at the top\n", "line 1 is not 'word v1 ... vD'"),
    ],
)
def test_a_headerless_file_that_is_not_a_vector_table_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "words.txt"
    path.write_text(text)
    with pytest.raises(modiff.WeightsError, match=message) as info:
        build(vectors=str(path))
    assert str(path) in str(info.value)


def test_limit_reads_the_first_words() -> None:
    e = build(vectors=datapath("lee_fasttext.vec"), limit=50)
    assert len(e.words) == 50 and e.words[0] == "the"


@pytest.mark.parametrize("name", ["vectors.kv", "vectors.txt"])
def test_gensim_pickle_files_are_refused(gensim_kv: KeyedVectors, tmp_path: Path, name: str) -> None:
    """KeyedVectors.save writes a pickle: refused whatever its name says."""
    path = tmp_path / name
    gensim_kv.save(str(path))
    with pytest.raises(modiff.WeightsError, match="pickle") as info:
        build(vectors=str(path))
    assert "save_word2vec_format" in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.vec"
    with pytest.raises(modiff.ModiffError, match="does not exist") as info:
        build(vectors=str(missing))
    assert "nope.vec" in str(info.value)


def test_garbage_file_is_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("3 4\nred 1 2\n")
    with pytest.raises(modiff.WeightsError, match="bad.txt"):
        build(vectors=str(path))


def test_dim_must_match_the_file() -> None:
    with pytest.raises(modiff.PluginError, match="dim = 32 .* 10 dimensions"):
        build(vectors=datapath("lee_fasttext.vec"), dim=32)


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(modiff.PluginError, match="heads = 4 does not divide the vector width 10"):
        build(vectors=datapath("lee_fasttext.vec"), depth=1)
    assert build(vectors=datapath("lee_fasttext.vec"), depth=1, heads=2).joint_training


def test_limit_without_vectors_is_a_settings_error() -> None:
    with pytest.raises(Exception, match="limit"):
        build(limit=10)


# ---------------------------------------------------------------- fitting


def test_needs_training_until_fitted() -> None:
    e = build(dim=8, epochs=2)
    assert e.needs_training and e.dim == 8 and isinstance(e, modiff.Fittable)
    e.fit(CAPTIONS)
    assert not e.needs_training
    assert set(COLOURS + SHAPES) <= set(e.words)
    assert e.vectors.shape == (len(e.words) + 2, 8)


def test_fit_is_deterministic() -> None:
    a, b = fitted(), fitted()
    assert a.words == b.words and torch.equal(a.vectors, b.vectors)


@pytest.mark.slow  # subprocesses
def test_fit_does_not_depend_on_the_hash_seed() -> None:
    """Python's string hash changes per process; training must not."""
    code = (
        "import hashlib, sys\n"
        "from modiff_word2vec.vectors import train_vectors\n"
        "s = [l.split() for l in sys.stdin.read().splitlines()]\n"
        "w, m = train_vectors(s, dim=8, window=3, epochs=2, min_count=1, skip_gram=True, seed=5)\n"
        "print(hashlib.sha256(' '.join(w).encode() + m.tobytes()).hexdigest())\n"
    )
    text = "\n".join(CAPTIONS[:200])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONHASHSEED": seed},
            text=True,
        )
        for seed in ("1", "2")
    ]
    digests = [p.communicate(text, timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert digests[0] == digests[1] and len(digests[0]) == 64


def test_fit_refuses_when_vectors_come_from_a_file() -> None:
    e = build(vectors=datapath("lee_fasttext.vec"))
    with pytest.raises(ValueError, match="reads its vectors from"):
        e.fit(CAPTIONS)


def test_empty_corpus_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="corpus is empty"):
        build().fit(["", "  "])


# ---------------------------------------------------------------- embedding


def test_unknown_word_warns_once_and_names_it() -> None:
    e = fitted()
    with pytest.warns(UnknownWordWarning, match="'zebra'"):
        out = e.embed(["a zebra circle"])
    assert out.mask.sum() == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e.embed(["a zebra circle", "zebra"])
    assert not [w for w in caught if issubclass(w.category, UnknownWordWarning)]
    with pytest.warns(UnknownWordWarning, match="'okapi'"):
        e.embed(["okapi"])


def test_unknown_words_share_a_dedicated_vector() -> None:
    e = fitted(positional=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownWordWarning)
        out = e.embed(["zebra", "okapi", "red"])
    assert torch.equal(out.tokens[0], out.tokens[1])
    assert not torch.allclose(out.tokens[0], out.tokens[2])
    torch.testing.assert_close(e.vector("zebra"), e.vectors[2:].mean(0))


def test_lookup_falls_back_to_lower_case() -> None:
    e = fitted()
    out = e.embed(["RED Circle", "red circle"])
    torch.testing.assert_close(out.tokens[0], out.tokens[1])


def test_an_empty_prompt_is_one_empty_token() -> None:
    e = fitted(positional=False)
    out = e.embed(["", "red"])
    assert out.tokens.shape[1] == 1 and out.mask.all()
    assert torch.equal(out.tokens[0, 0], torch.zeros(e.dim))


def test_positions_change_the_vector_of_a_repeated_word() -> None:
    e = fitted()
    out = e.embed(["red red"])
    assert not torch.allclose(out.tokens[0, 0], out.tokens[0, 1])
    plain = fitted(positional=False).embed(["red red"])
    assert torch.equal(plain.tokens[0, 0], plain.tokens[0, 1])


def test_self_attention_mixes_in_the_context() -> None:
    """With depth > 0 a word's output depends on its neighbours; with depth 0 it does not."""
    deep = fitted(depth=1)
    out = deep.embed(["red circle", "blue circle"])
    assert not torch.allclose(out.tokens[0, 1], out.tokens[1, 1], atol=1e-4)
    flat = fitted(depth=0).embed(["red circle", "blue circle"])
    torch.testing.assert_close(flat.tokens[0, 1], flat.tokens[1, 1])


def test_joint_training_only_with_layers() -> None:
    assert not fitted(depth=0).joint_training and not list(fitted(depth=0).parameters())
    deep = fitted(depth=2)
    assert deep.joint_training and sum(p.numel() for p in deep.parameters()) > 0
    assert "vectors" not in dict(deep.named_parameters()) and "vectors" in deep.state_dict()


def test_load_assets_resizes_to_the_saved_vocabulary(tmp_path: Path) -> None:
    source = fitted()
    source.save_assets(tmp_path)
    target = build(dim=16)
    assert target.vectors.shape[0] == 2
    target.load_assets(tmp_path)
    assert target.vectors.shape == source.vectors.shape and target.words == source.words
    target.load_state_dict(source.state_dict())
    assert not target.needs_training
    torch.testing.assert_close(target.embed(["red circle"]).tokens, source.embed(["red circle"]).tokens)


def test_load_assets_rejects_another_width(tmp_path: Path) -> None:
    fitted().save_assets(tmp_path)
    with pytest.raises(modiff.WeightsError, match="16-dimensional .* dim = 8"):
        build(dim=8).load_assets(tmp_path)


def test_whitening_separates_words_used_in_the_same_contexts() -> None:
    """Colour words share their contexts in templated captions: nearly parallel
    vectors. Whitened, they are about as different as unrelated words."""
    plain, white = fitted(positional=False), fitted(positional=False, standardize="whiten")
    for e, low, high in ((plain, 0.9, 1.0), (white, -0.5, 0.5)):
        out = e.embed(["red", "blue"]).tokens[:, 0]
        cos = float(torch.nn.functional.cosine_similarity(out[0], out[1], dim=0))
        assert low < cos < high, (e.settings.standardize, cos)
    # Whitened vocabulary: zero mean, unit RMS, identity covariance up to scale.
    w = (white.vectors[2:] - white.offset) @ white.transform
    torch.testing.assert_close(w.mean(0), torch.zeros(16), atol=1e-4, rtol=0)
    assert abs(float(w.pow(2).mean()) - 1) < 1e-3
    eig = torch.linalg.eigvalsh(w.T.double() @ w.double() / (len(w) - 1))
    assert float(eig.max() / eig[eig > 1e-3 * eig.max()].min()) < 1.01


def test_sinusoidal_positions_match_the_formula() -> None:
    pe = sinusoidal_positions(5, 7, device=torch.device("cpu"), dtype=torch.float32)
    assert pe.shape == (5, 7)
    p, i = 3, 2
    torch.testing.assert_close(pe[p, 2 * i], torch.tensor(np.sin(p / 10000 ** (2 * i / 7)), dtype=torch.float32))
    torch.testing.assert_close(pe[p, 2 * i + 1], torch.tensor(np.cos(p / 10000 ** (2 * i / 7)), dtype=torch.float32))


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=80))
def test_tokenize_keeps_every_visible_character(text: str) -> None:
    tokens = tokenize(text, lowercase=False)
    assert all(t and not any(ch.isspace() for ch in t) for t in tokens)
    assert "".join(tokens) == "".join(ch for ch in text if not ch.isspace())


def test_registered_as_a_text_embedder() -> None:
    assert "word2vec" in modiff.registry().names("text_embedder")


@pytest.mark.slow  # a subprocess
def test_importing_the_plugin_imports_neither_torch_nor_gensim() -> None:
    code = "import sys, modiff_word2vec; assert not {'torch', 'gensim'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
