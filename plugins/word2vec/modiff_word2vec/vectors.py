"""Word vectors from gensim: trained on captions, or read from a file safely.

Only the word2vec text and binary formats (and header-less GloVe text) are
read. gensim's own ``KeyedVectors.save`` format is a pickle, and unpickling a
file runs whatever code it names, so such files are refused with a message
that says how to convert them once, in an environment that trusts them.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import modiff

#: Extensions gensim and friends use for pickles (or numpy side files of pickles).
_PICKLE_EXTENSIONS = {".kv", ".model", ".pkl", ".pickle", ".npy", ".pt", ".pth", ".ckpt"}
_HEADER = re.compile(rb"^\s*(\d+)\s+(\d+)\s*$")
_SAMPLE_BYTES = 1 << 16

CONVERT_HINT = (
    "convert it once where you trust the file: "
    "`from gensim.models import KeyedVectors; "
    "KeyedVectors.load(PATH).save_word2vec_format(\"vectors.bin\", binary=True)`, "
    "then set vectors = \"vectors.bin\""
)


def _stable_hash(text: str) -> int:
    """A hash that does not change between processes (Python's ``hash`` of a
    string does, with ``PYTHONHASHSEED``), so training is reproducible."""
    return zlib.crc32(text.encode("utf-8"))


def train_vectors(
    sentences: Sequence[Sequence[str]],
    *,
    dim: int,
    window: int,
    epochs: int,
    min_count: int,
    skip_gram: bool,
    seed: int,
) -> tuple[list[str], np.ndarray]:
    """Train word2vec on tokenised sentences; returns ``(words, matrix [V, dim])``.

    One worker thread: gensim's multi-threaded training interleaves updates in
    an order that depends on scheduling, so only one worker is reproducible.
    """
    from gensim.models import Word2Vec

    sentences = [list(s) for s in sentences if s]
    if not sentences:
        raise ValueError(
            "the caption corpus is empty (no words): word2vec needs captions to train on; "
            "configure a dataset with captions, or set vectors = \"PATH\" to load vectors from a file"
        )
    model = Word2Vec(
        sentences=sentences,
        vector_size=dim,
        window=window,
        epochs=epochs,
        min_count=min_count,
        sg=1 if skip_gram else 0,
        seed=seed,
        workers=1,
        hashfxn=_stable_hash,
    )
    words = list(model.wv.index_to_key)
    if not words:
        raise ValueError(
            f"no word occurs at least min_count = {min_count} times in the caption corpus; lower min_count"
        )
    return words, np.asarray(model.wv.vectors, dtype=np.float32)


def detect_format(path: Path) -> str:
    """``"text"``, ``"binary"`` or ``"text-no-header"`` from the extension and first bytes.

    Raises :class:`modiff.WeightsError` for pickles, whatever their extension.
    """
    with path.open("rb") as f:
        sample = f.read(_SAMPLE_BYTES)
    if len(sample) >= 2 and sample[0] == 0x80 and 2 <= sample[1] <= 5:
        raise modiff.WeightsError(
            f"the vectors file {path} is a Python pickle (gensim's KeyedVectors.save format); "
            f"pickles can run arbitrary code when loaded, so modiff refuses them: {CONVERT_HINT}"
        )
    if path.suffix.lower() in _PICKLE_EXTENSIONS:
        raise modiff.WeightsError(
            f"the vectors file {path} has extension {path.suffix!r}, which gensim uses for pickles "
            f"(or their numpy side files); modiff reads only word2vec text or binary files: {CONVERT_HINT}"
        )
    first, _, rest = sample.partition(b"\n")
    if not _HEADER.match(first):
        return "text-no-header"
    if path.suffix.lower() == ".bin":
        return "binary"
    if path.suffix.lower() in {".txt", ".vec"}:
        return "text"
    body = rest[: rest.rfind(b"\n") + 1] if b"\n" in rest else rest
    if any(b < 0x20 and b not in (0x09, 0x0A, 0x0D) for b in body):
        return "binary"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "text"


def read_vectors(path: str | Path, *, fmt: str = "auto", limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """Read a word-vector file; returns ``(words, matrix [V, D])`` in file order."""
    from gensim.models import KeyedVectors

    p = Path(path).expanduser()
    if not p.is_file():
        raise modiff.ModiffError(
            f"the word-vector file {str(path)!r} does not exist (or is not a file); "
            "set text_embedder.vectors to an existing word2vec .txt/.vec/.bin file, "
            "or remove it to train on the captions"
        )
    detected = detect_format(p)  # also refuses pickles when a format is forced
    fmt = detected if fmt == "auto" else fmt
    if fmt == "text-no-header":
        check_headerless(p, limit)
    try:
        kv = KeyedVectors.load_word2vec_format(
            str(p),
            binary=fmt == "binary",
            no_header=fmt == "text-no-header",
            limit=limit,
            unicode_errors="replace",
        )
    except Exception as exc:
        raise modiff.WeightsError(
            f"could not read {p} as {fmt} word vectors ({type(exc).__name__}: {exc}); "
            "check the file, or set vectors_format to \"text\", \"binary\" or \"text-no-header\""
        ) from exc
    words = list(kv.index_to_key)
    if not words:
        raise modiff.WeightsError(f"the word-vector file {p} holds no words")
    matrix = np.asarray(kv.vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise modiff.WeightsError(
            f"the word-vector file {p} holds words but no vector values (0 dimensions); a word-vector file has "
            "one line per word, the word then its numbers (\"red 0.12 -0.5 ...\")"
        )
    return words, matrix


def check_headerless(path: Path, limit: int | None = None) -> None:
    """Refuse a header-less text file that is not a table of ``word v1 ... vD``.

    gensim reads such a file by trusting its first line: a plain list of words
    becomes a vocabulary of 0-dimensional vectors, and lines of different
    lengths are read without complaint. Every line must have the same number
    of fields, at least two, and every field after the word must be a number.
    """
    width: int | None = None
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if limit is not None and number > limit:
                break
            fields = line.rstrip().split(" ")
            if fields == [""]:
                continue
            if width is None:
                width = len(fields)
            if len(fields) < 2:
                raise modiff.WeightsError(
                    f"{path} line {number} has a word and no numbers ({line.strip()[:40]!r}); a word-vector file has "
                    "one line per word, the word then its D numbers (word2vec text files start with a line "
                    "\"COUNT D\")"
                )
            if len(fields) != width:
                raise modiff.WeightsError(
                    f"{path} line {number} has {len(fields) - 1} numbers but line 1 has {width - 1}: every word "
                    "needs a vector of the same dimension"
                )
            try:
                [float(x) for x in fields[1:]]
            except ValueError:
                raise modiff.WeightsError(
                    f"{path} line {number} is not 'word v1 ... vD' (a value is not a number): {line.strip()[:60]!r}"
                ) from None
