"""word2vec text embeddings for modiff, trained with gensim or loaded from disk.

Registers the text embedder ``word2vec``. torch and gensim are imported
inside the factory, so listing plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .settings import Word2VecSettings

__all__ = ["Word2VecSettings", "build_word2vec", "register_text_embedders"]


def build_word2vec(settings: Word2VecSettings, context: modiff.BuildContext) -> Any:
    """word2vec vectors (gensim, trained on the captions or read from a file) + positions + optional self-attention."""
    from .embedder import Word2VecEmbedder

    return Word2VecEmbedder.from_settings(settings)


@modiff.hookimpl
def register_text_embedders(register: modiff.Register) -> None:
    register("word2vec", build_word2vec, Word2VecSettings)
