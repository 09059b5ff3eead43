"""Words: splitting prompts into tokens and the vocabulary fitted on captions."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import modiff

# A word is a run of letters/digits (with inner apostrophes); every other
# visible character is a token of its own ("top left: a red circle; ..."
# keeps its ':' and ';', which mark where one object's words end).
_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")

#: Rows before the words: padding (never a real token), unknown words, and
#: the start token every prompt begins with (so an empty prompt still has one
#: real token, and the start token can gather the whole prompt).
PAD, UNKNOWN, START = 0, 1, 2
SPECIALS = ("<pad>", "<unk>", "<start>")
FORMAT = "modiff-text-transformer-vocabulary/1"
FILE = "vocabulary.json"


def tokenize(text: str, *, lowercase: bool = True) -> list[str]:
    """Words and symbols of ``text`` in order; whitespace separates and vanishes."""
    return _TOKEN.findall(text.lower() if lowercase else text)


@dataclass
class Vocabulary:
    """Word -> row index; rows ``0..2`` are :data:`SPECIALS`."""

    words: list[str] = field(default_factory=list)
    lowercase: bool = True

    def __post_init__(self) -> None:
        self._index = {w: i + len(SPECIALS) for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words) + len(SPECIALS)

    @classmethod
    def fit(
        cls, corpus: Iterable[str], *, lowercase: bool, min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """The corpus's words, most frequent first (ties alphabetical, so the
        order is a pure function of the corpus)."""
        counts: Counter[str] = Counter()
        for text in corpus:
            counts.update(tokenize(text, lowercase=lowercase))
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(words[:max_size] if max_size is not None else words, lowercase)

    def ids(self, prompt: str) -> tuple[list[int], list[str]]:
        """The start token then one row per word (not truncated), and the unknown words."""
        words = tokenize(prompt, lowercase=self.lowercase)
        ids = [self._index.get(w, UNKNOWN) for w in words]
        return [START, *ids], [w for w, i in zip(words, ids) if i == UNKNOWN]

    def save(self, directory: Path, *, fitted: bool) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, "specials": list(SPECIALS), "lowercase": self.lowercase, "fitted": fitted,
                "words": self.words}
        tmp = directory / f".{FILE}.tmp"
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        tmp.replace(directory / FILE)

    @classmethod
    def load(cls, directory: Path) -> tuple[Vocabulary, bool]:
        """The vocabulary saved in ``directory`` and whether it was fitted."""
        path = Path(directory) / FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise modiff.WeightsError(
                f"the text-transformer vocabulary {path} is missing; the run is incomplete"
            ) from exc
        except (OSError, ValueError) as exc:
            raise modiff.WeightsError(f"the text-transformer vocabulary {path} is unreadable: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise modiff.WeightsError(f"{path} is not a text-transformer vocabulary (expected format {FORMAT})")
        words = data.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise modiff.WeightsError(f"{path}: 'words' must be a list of strings")
        if data.get("specials") != list(SPECIALS):
            raise modiff.WeightsError(f"{path}: special tokens {data.get('specials')} differ from {list(SPECIALS)}")
        return cls(words, bool(data.get("lowercase", True))), bool(data.get("fitted", True))


def unknown_summary(words: Sequence[str], size: int) -> str:
    shown = ", ".join(repr(w if len(w) <= 40 else w[:40] + "...") for w in words[:5])
    more = f" and {len(words) - 5} more" if len(words) > 5 else ""
    return (f"unknown word(s) {shown}{more}: not among the {size} words fitted on the captions; "
            "embedded as <unk>")
