"""Parameters of the ``word2vec`` text embedder (pydantic only: cheap to import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import modiff


class Word2VecSettings(modiff.ComponentSettings):
    """How the word vectors are obtained and what is stacked on top of them."""

    vectors: str | None = Field(
        None,
        description=(
            "A word-vector file to load instead of training on the captions: word2vec text (.txt, .vec), "
            "word2vec binary (.bin) or GloVe-style text without a header. The dimension comes from the file. "
            "Pickle-based files (gensim .kv/.model) are refused; convert them with save_word2vec_format."
        ),
    )
    vectors_format: Literal["auto", "text", "binary", "text-no-header"] = Field(
        "auto", description="Format of `vectors`; auto looks at the extension and the first bytes."
    )
    limit: int | None = Field(
        None, ge=1, description="Read only the first `limit` words of `vectors` (files are sorted by frequency)."
    )
    dim: int | None = Field(
        None,
        ge=1,
        description="Vector width when training (default 64); with `vectors` it must match the file or be unset.",
    )
    window: int = Field(5, ge=1, description="gensim: context window in words.")
    epochs: int = Field(30, ge=1, description="gensim: passes over the caption corpus.")
    min_count: int = Field(1, ge=1, description="gensim: words seen fewer times are unknown.")
    skip_gram: bool = Field(True, description="gensim: skip-gram (True) or CBOW (False).")
    seed: int = Field(0, description="gensim: seed of the initial vectors and of sampling (training uses one worker).")
    depth: int = Field(
        0,
        ge=0,
        description="Trainable self-attention layers over the vectors, trained with the denoiser; 0 = plain vectors.",
    )
    heads: int = Field(4, ge=1, description="Attention heads per layer (must divide the vector width).")
    max_tokens: int = Field(77, ge=1, description="Longer prompts are truncated, with a warning.")
    lowercase: bool = Field(True, description="Lower-case words before training and lookup.")
    positional: bool = Field(True, description="Add sinusoidal position encodings to the word vectors.")
    standardize: Literal["rms", "whiten"] = Field(
        "rms",
        description=(
            "How vectors are scaled before positions are added: rms keeps their geometry; whiten (ZCA over the "
            "vocabulary) equalises every direction, so words used in identical contexts (colours) stop looking alike."
        ),
    )

    @model_validator(mode="after")
    def _limit_needs_a_file(self) -> Word2VecSettings:
        if self.vectors is None and self.limit is not None:
            raise ValueError("`limit` only applies when `vectors` names a file; remove it or set `vectors`")
        return self
