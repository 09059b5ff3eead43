"""The text transformer: words -> learned vectors + positions -> bidirectional
self-attention layers -> :class:`TextEmbedding`.

Why bidirectional: in "a red circle at the top left and a blue square at the
bottom right" the vector of "red" has to say that it belongs to the circle in
the top left, and the place is named *after* the colour. A causal text tower
(CLIP's) cannot put that into "red"; here every token attends to every other
real token. Padding is masked everywhere: as a key in every attention layer,
and zeroed in the output, so a prompt embeds the same alone or in any batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import modiff
from modiff.protocols import Batch, TextEmbedding

from .pretext import LayoutDecoder, layout_loss
from .settings import TextTransformerSettings
from .vocabulary import PAD, SPECIALS, Vocabulary, unknown_summary

#: Standard deviation of the initial word vectors and of the initial position vectors. Words start
#: far apart and positions smaller, so that an untrained embedder already gives every word its own
#: vector (the denoiser can latch on at once) while positions are there for the layers to use.
WORD_STD, POSITION_STD = 1.0, 0.5
#: Standard deviation of the initial output projections of every layer (attention and feed-forward).
OUTPUT_STD = 0.02
_MAX_REPORTED_UNKNOWN = 10_000


class Block(nn.Module):
    """Pre-norm transformer layer: masked self-attention, then a GELU feed-forward."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width), nn.Dropout(dropout)
        )
        # Each layer starts close to the identity (small output projections). With the default
        # initialisation the untrained attention, averaging over the prompt, adds nearly the same
        # vector to every token and swamps the words: the tokens of a prompt started out nearly
        # equal (cosine 0.96 with two layers) and the denoiser saw almost nothing of the prompt.
        for layer in (self.out, self.mlp[2]):
            nn.init.normal_(layer.weight, std=OUTPUT_STD)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x`` ``[B, L, W]``; ``mask`` ``[B, L]``, True at real tokens (keys elsewhere are never attended)."""
        b, n, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.out(attn.transpose(1, 2).reshape(b, n, w))
        return x + self.mlp(self.norm2(x))


class TextTransformer(nn.Module):
    """Prompts -> :class:`TextEmbedding`, trained with the denoiser.

    Fittable: :meth:`fit` builds the vocabulary from the caption corpus (the
    core runs it in the text-embedder stage) and draws the word vectors; the
    layers are built with the component. ``joint_training`` (a setting, true
    unless a pretext trained the tokens) makes it learn from the denoising loss.
    The vocabulary travels as JSON (:meth:`save_assets`), the weights through
    ``state_dict``.
    """

    def __init__(self, settings: TextTransformerSettings):
        super().__init__()
        self.settings = settings
        self.dim = int(settings.width)
        self.max_tokens = int(settings.max_tokens)
        self.vocabulary = Vocabulary([], settings.lowercase)
        g = torch.Generator().manual_seed(settings.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)  # the layers' own initialisation, apart from the run's RNG
            self.layers = nn.ModuleList(
                Block(self.dim, settings.heads, settings.mlp_ratio, settings.dropout) for _ in range(settings.depth)
            )
            self.norm = nn.LayerNorm(self.dim)
        self.positions = nn.Parameter(POSITION_STD * torch.randn(self.max_tokens, self.dim, generator=g))
        self.words = nn.Embedding(len(SPECIALS), self.dim, padding_idx=PAD)
        self._init_words()
        #: Trained with the denoiser on the denoising loss (the core's joint stage).
        self.joint_training = bool(settings.joint_training)
        #: True until the vocabulary is fitted on captions or restored.
        self.needs_training = True
        self._reported: set[str] = set()
        self._warned_unfitted = False

    def _init_words(self) -> None:
        """Word vectors drawn from ``seed`` alone: the same vocabulary gives the same vectors."""
        g = torch.Generator().manual_seed(self.settings.seed + 1)
        weight = WORD_STD * torch.randn(self.words.num_embeddings, self.dim, generator=g)
        weight[PAD] = 0.0
        with torch.no_grad():
            self.words.weight.copy_(weight.to(self.words.weight))

    def _resize(self, size: int) -> None:
        device, dtype = self.positions.device, self.positions.dtype
        self.words = nn.Embedding(size, self.dim, padding_idx=PAD, device=device, dtype=dtype)

    # ------------------------------------------------------------------ fitting

    def fit(self, corpus: Iterable[str]) -> None:
        """Build the vocabulary from ``corpus`` and draw fresh word vectors."""
        s = self.settings
        self.vocabulary = Vocabulary.fit(corpus, lowercase=s.lowercase, min_count=s.min_count, max_size=s.max_vocab)
        self._resize(len(self.vocabulary))
        self._init_words()
        self.needs_training = False
        self._reported.clear()

    # ------------------------------------------------------------------ embedding

    @property
    def device(self) -> torch.device:
        return self.positions.device

    def token_ids(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(ids [B, L], mask [B, L] bool)``, padded to the longest prompt and
        truncated to ``max_tokens`` with a warning."""
        if isinstance(prompts, str):
            raise TypeError("embed takes a sequence of prompts; wrap a single prompt in a list")
        rows, unknown = [], []
        for p in prompts:
            ids, missing = self.vocabulary.ids(p)
            rows.append(ids)
            unknown.extend(missing)
        if unknown:
            self._report_unknown(unknown)
        rows = modiff.truncate_token_rows(rows, self.max_tokens, what="tokens (the start token included)", stacklevel=4)
        return modiff.pad_token_rows(rows, PAD, device=self.device)

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        ids, mask = self.token_ids(prompts)
        keep = mask[..., None].to(self.positions.dtype)
        x = (self.words(ids) + self.positions[: ids.shape[1]][None]) * keep
        for layer in self.layers:
            x = layer(x, mask)
        tokens = self.norm(x) * keep
        if self.settings.pooled == "start":
            pooled = tokens[:, 0]
        else:
            pooled = tokens.sum(1) / keep.sum(1).clamp_min(1.0)
        return TextEmbedding(tokens=tokens, mask=mask, pooled=pooled)

    def forward(self, prompts: Sequence[str]) -> TextEmbedding:
        return self.embed(prompts)

    def _report_unknown(self, words: list[str]) -> None:
        if self.needs_training:
            if not self._warned_unfitted:
                self._warned_unfitted = True
                warnings.warn(
                    "the text transformer has no vocabulary yet (it is fitted on the captions in the text-embedder "
                    "stage of `modiff train`); every word is embedded as <unk> until then",
                    modiff.UnknownWordWarning,
                    stacklevel=4,
                )
            return
        new = [w for w in dict.fromkeys(words) if w not in self._reported]
        if not new or len(self._reported) > _MAX_REPORTED_UNKNOWN:
            return
        self._reported.update(new)
        warnings.warn(unknown_summary(new, len(self.vocabulary.words)), modiff.UnknownWordWarning, stacklevel=4)

    # ------------------------------------------------------------------ assets

    def save_assets(self, directory: Path) -> None:
        """The vocabulary as JSON (the vectors and layers are in ``state_dict``)."""
        self.vocabulary.save(Path(directory), fitted=not self.needs_training)

    def load_assets(self, directory: Path) -> None:
        """Read the vocabulary and resize the word table to it, ready for ``load_state_dict``."""
        vocabulary, fitted = Vocabulary.load(Path(directory))
        self.vocabulary = vocabulary
        self._resize(len(vocabulary))
        self.needs_training = not fitted
        self._reported.clear()
        self._warned_unfitted = False


class LayoutPretrainedTransformer(TextTransformer):
    """The text transformer with a stage of its own before the denoiser's: after
    the vocabulary is fitted, ``train.text_embedder.steps`` steps of the layout
    pretext (:mod:`.pretext`) teach its tokens to carry each object's place with
    its colour and shape; then it trains with the denoiser as usual."""

    def __init__(self, settings: TextTransformerSettings):
        super().__init__(settings)
        self.pretext = LayoutDecoder(self.dim, settings.pretext_grid, settings.heads, settings.seed)

    def fit(self, corpus: Iterable[str]) -> None:
        super().fit(corpus)
        self.needs_training = True  # fitted; the layout stage is still to come

    def training_loss(self, batch: Batch, step: modiff.TrainingStep | None = None) -> Tensor:
        """The layout pretext's loss on ``batch`` (deterministic: it draws nothing)."""
        return layout_loss(self.pretext, self.embed(batch.captions), batch.images)

    def finish_training(self, batches: Iterable[Batch]) -> None:
        self.needs_training = False
