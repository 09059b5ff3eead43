"""The word2vec text embedder: frozen word vectors, positions, optional self-attention.

This is the text encoder as the explanations of Stable Diffusion describe it:
each word becomes a vector learned from which words appear near which
(word2vec); a sinusoidal position encoding is added so that word order is
visible; and a few self-attention layers (trained together with the
denoiser) let each word's vector take its neighbours into account.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import modiff
from modiff.protocols import TextEmbedding

from .settings import Word2VecSettings
from .text import tokenize
from .vectors import read_vectors, train_vectors

DEFAULT_DIM = 64
VOCABULARY_FILE = "vocabulary.json"
VOCABULARY_FORMAT = "modiff-word2vec-vocabulary/1"
#: Rows of the matrix before the vocabulary: an unknown word, and the one
#: token an empty prompt becomes (so every prompt has a real token and
#: cross-attention never attends over nothing).
UNKNOWN, EMPTY = 0, 1
SPECIALS = ("<unk>", "<empty>")
_MAX_REPORTED_UNKNOWN = 10_000



def sinusoidal_positions(length: int, dim: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[length, dim]`` sine/cosine position encodings (Vaswani et al.).

    Even channels are sines, odd channels cosines, of geometrically spaced
    frequencies, so that a fixed offset between two positions is a rotation
    the attention layers can learn to read.
    """
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    half = (dim + 1) // 2
    freq = torch.exp(-math.log(10_000.0) * torch.arange(half, device=device, dtype=torch.float32) * 2 / dim)
    angles = pos * freq[None]
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, 2 * half)[:, :dim]
    return pe.to(dtype)


def standardization(matrix: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """``(offset [D], transform [D, D])`` so that ``(v - offset) @ transform``
    has entries of unit RMS over the vocabulary.

    ``"rms"`` only rescales: vectors keep their geometry, including how close
    words of one kind are (colour words in templated captions: cosine ~0.99).
    ``"whiten"`` (ZCA) removes the vocabulary mean and equalises the variance
    of every direction the vocabulary spans, so the small part of a vector
    that tells "red" from "blue" is as large as the part they share.
    """
    d = matrix.shape[1]
    m = matrix.double()
    if mode == "whiten" and m.shape[0] >= 2:
        mean = m.mean(0)
        centred = m - mean
        cov = centred.T @ centred / (m.shape[0] - 1)
        eigval, eigvec = torch.linalg.eigh(cov)
        floor = 1e-6 * float(eigval.clamp_min(0).max()) + 1e-12
        transform = eigvec @ torch.diag(eigval.clamp_min(floor).rsqrt()) @ eigvec.T
        rms = float((centred @ transform).pow(2).mean().sqrt())
        return mean.float(), (transform / (rms if rms > 0 else 1.0)).float()
    rms = float(m.pow(2).mean().sqrt()) if m.numel() else 1.0
    return torch.zeros(d), torch.eye(d) / (rms if rms > 0 else 1.0)


class Word2VecEmbedder(nn.Module):
    """Prompts -> word vectors (+ positions, + self-attention) -> :class:`TextEmbedding`.

    The vector matrix is a buffer (frozen, saved in ``state_dict``); rows 0
    and 1 are ``<unk>`` (the mean vector of the vocabulary: an unknown word is
    treated as "some word") and ``<empty>`` (zero). The vocabulary travels as
    JSON through :meth:`save_assets`. With ``depth > 0`` the attention layers
    are parameters trained jointly with the denoiser (``joint_training``).
    """

    def __init__(self, settings: Word2VecSettings, dim: int):
        super().__init__()
        if settings.depth > 0 and dim % settings.heads:
            divisors = [h for h in range(1, min(dim, 16) + 1) if dim % h == 0]
            raise ValueError(
                f"heads = {settings.heads} does not divide the vector width {dim}; "
                f"set text_embedder.heads to one of {divisors}"
            )
        self.settings = settings
        self.dim = int(dim)
        self.max_tokens = int(settings.max_tokens)
        self.words: list[str] = []
        self._index: dict[str, int] = {}
        self.register_buffer("vectors", torch.zeros(len(SPECIALS), self.dim))
        # An affine map applied to looked-up vectors, ``(v - offset) @ transform``,
        # fixed when the vectors are set (see `standardize`): it brings their
        # entries to unit scale, like the position encodings they are added to.
        self.register_buffer("offset", torch.zeros(self.dim))
        self.register_buffer("transform", torch.eye(self.dim))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                self.dim,
                settings.heads,
                dim_feedforward=4 * self.dim,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(settings.depth)
        )
        self.norm: nn.Module = nn.LayerNorm(self.dim) if settings.depth else nn.Identity()
        #: The core trains these layers together with the denoiser.
        self.joint_training = settings.depth > 0
        #: True until vectors are fitted, loaded from a file, or restored.
        self.needs_training = True
        self._reported: set[str] = set()
        self._warned_unfitted = False

    # ------------------------------------------------------------------ build

    @classmethod
    def from_settings(cls, settings: Word2VecSettings) -> Word2VecEmbedder:
        """Build the embedder; reads ``settings.vectors`` now, so ``dim`` is known."""
        if settings.vectors is None:
            return cls(settings, settings.dim or DEFAULT_DIM)
        words, matrix = read_vectors(settings.vectors, fmt=settings.vectors_format, limit=settings.limit)
        dim = int(matrix.shape[1])
        if settings.dim is not None and settings.dim != dim:
            raise ValueError(
                f"text_embedder.dim = {settings.dim} but the vectors in {settings.vectors} have {dim} dimensions; "
                "remove dim (it is taken from the file) or choose a file of that width"
            )
        embedder = cls(settings, dim)
        embedder.set_vectors(words, matrix)
        return embedder

    def set_vectors(self, words: Sequence[str], matrix: np.ndarray | Tensor) -> None:
        """Install a vocabulary and its ``[V, dim]`` vectors (marks the embedder fitted)."""
        m = torch.as_tensor(np.asarray(matrix), dtype=torch.float32)
        if m.ndim != 2 or m.shape[0] != len(words) or m.shape[1] != self.dim:
            raise ValueError(
                f"expected {len(words)} vectors of width {self.dim}, got a matrix of shape {tuple(m.shape)}"
            )
        full = torch.zeros(len(words) + len(SPECIALS), self.dim)
        full[len(SPECIALS) :] = m
        if len(words):
            full[UNKNOWN] = m.mean(0)
        device = self.vectors.device
        self.vectors = full.to(device)
        offset, transform = standardization(m, self.settings.standardize)
        self.offset = offset.to(device)
        self.transform = transform.to(device)
        self._set_words(words)
        self.needs_training = False

    def _set_words(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self._index = {}
        for i, w in enumerate(self.words):
            self._index.setdefault(w, i + len(SPECIALS))
        self._reported.clear()
        self._warned_unfitted = False

    def fit(self, corpus: Iterable[str]) -> None:
        """Train word2vec (gensim) on the caption corpus."""
        s = self.settings
        if s.vectors is not None:
            raise ValueError(
                f"this word2vec embedder reads its vectors from {s.vectors}; it is not fitted on captions. "
                "Remove text_embedder.vectors to train on the captions instead"
            )
        sentences = [tokenize(c, lowercase=s.lowercase) for c in corpus]
        words, matrix = train_vectors(
            sentences,
            dim=self.dim,
            window=s.window,
            epochs=s.epochs,
            min_count=s.min_count,
            skip_gram=s.skip_gram,
            seed=s.seed,
        )
        self.set_vectors(words, matrix)

    # ------------------------------------------------------------------ lookup

    def vector(self, word: str) -> Tensor:
        """The stored (unscaled) vector of ``word``; ``<unk>`` for an unknown word."""
        return self.vectors[self._lookup(word)]

    def _lookup(self, word: str) -> int:
        i = self._index.get(word)
        if i is None and self.settings.lowercase:
            i = self._index.get(word.lower())
        return UNKNOWN if i is None else i

    def token_ids(self, prompt: str) -> tuple[list[int], list[str]]:
        """Row indices for ``prompt`` (not truncated) and the words that are unknown."""
        words = tokenize(prompt, lowercase=False)
        if not words:
            return [EMPTY], []
        ids = [self._lookup(w) for w in words]
        return ids, [w for w, i in zip(words, ids) if i == UNKNOWN]

    def _report_unknown(self, words: list[str]) -> None:
        if not self.words:
            if not self._warned_unfitted:
                self._warned_unfitted = True
                warnings.warn(
                    "the word2vec embedder has no vectors yet (it is fitted on the captions in the fit stage of "
                    "`modiff train`, or set vectors = \"PATH\"); every word is embedded as <unk> until then",
                    modiff.UnknownWordWarning,
                    stacklevel=3,
                )
            return
        for w in words:
            if w in self._reported or len(self._reported) > _MAX_REPORTED_UNKNOWN:
                continue
            self._reported.add(w)
            shown = w if len(w) <= 40 else w[:40] + "..."
            note = (
                " (no further unknown words will be reported)" if len(self._reported) > _MAX_REPORTED_UNKNOWN else ""
            )
            warnings.warn(
                f"unknown word {shown!r}: it is not among the {len(self.words)} words of the word2vec vocabulary "
                f"and is embedded as the <unk> vector{note}",
                modiff.UnknownWordWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ embed

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        """Embed ``prompts``, padded to the longest one (at most ``max_tokens``)."""
        if isinstance(prompts, str):
            raise TypeError("embed takes a sequence of prompts; wrap a single prompt in a list")
        device = self.vectors.device
        rows: list[list[int]] = []
        unknown: list[str] = []
        for prompt in prompts:
            ids, missing = self.token_ids(prompt)
            rows.append(ids)
            unknown.extend(missing)
        if unknown:
            self._report_unknown(unknown)
        rows = modiff.truncate_token_rows(rows, self.max_tokens, stacklevel=3)
        ids, mask = modiff.pad_token_rows(rows, EMPTY, device=device)
        length = ids.shape[1]
        x = (self.vectors[ids] - self.offset) @ self.transform
        if self.settings.positional:
            x = x + sinusoidal_positions(length, self.dim, device=device, dtype=x.dtype)[None]
        keep = mask[..., None].to(x.dtype)
        x = x * keep
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=~mask) * keep
        x = self.norm(x) * keep
        pooled = x.sum(1) / keep.sum(1).clamp_min(1.0)
        return TextEmbedding(tokens=x, mask=mask, pooled=pooled)

    def forward(self, prompts: Sequence[str]) -> TextEmbedding:
        return self.embed(prompts)

    # ------------------------------------------------------------------ assets

    def save_assets(self, directory: Path) -> None:
        """Write the vocabulary as JSON (the vectors are in ``state_dict``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "format": VOCABULARY_FORMAT,
            "dim": self.dim,
            "specials": list(SPECIALS),
            "fitted": not self.needs_training,
            "words": self.words,
        }
        tmp = directory / (VOCABULARY_FILE + ".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        tmp.replace(directory / VOCABULARY_FILE)

    def load_assets(self, directory: Path) -> None:
        """Read the vocabulary and resize the vector buffer to it, ready for
        ``load_state_dict``."""
        path = Path(directory) / VOCABULARY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise modiff.WeightsError(f"the word2vec vocabulary {path} is missing; the run is incomplete") from exc
        except (OSError, ValueError) as exc:
            raise modiff.WeightsError(f"the word2vec vocabulary {path} is unreadable: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != VOCABULARY_FORMAT:
            raise modiff.WeightsError(
                f"{path} is not a modiff word2vec vocabulary (expected format {VOCABULARY_FORMAT})"
            )
        words, dim = data.get("words"), data.get("dim")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise modiff.WeightsError(f"{path}: 'words' must be a list of strings")
        if dim != self.dim:
            raise modiff.WeightsError(
                f"{path} holds {dim}-dimensional vectors but this embedder was built with dim = {self.dim}; "
                "use the settings the run was trained with"
            )
        device = self.vectors.device
        self.vectors = torch.zeros(len(words) + len(SPECIALS), self.dim, device=device)
        self._set_words(words)
        self.needs_training = not bool(data.get("fitted", True))
