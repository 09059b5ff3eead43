"""Splitting prompts into words, the same way for fitting and for lookup."""

from __future__ import annotations

import re

# A word is a run of letters/digits (with inner apostrophes, "don't"); every
# other visible character (punctuation, emoji) is a token of its own, so that
# nothing a user typed silently disappears.
_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def tokenize(text: str, *, lowercase: bool = True) -> list[str]:
    """Words and symbols of ``text`` in order; whitespace separates and vanishes."""
    if lowercase:
        text = text.lower()
    return _TOKEN.findall(text)
