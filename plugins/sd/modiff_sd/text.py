"""``sd-clip``: a CLIP text encoder used the way Stable Diffusion uses it.

What differs from modiff's ``clip`` embedder, and why it matters for SD
weights: SD's UNet was trained on CLIP's hidden states for a prompt padded
to 77 tokens with the pad token, encoded without an attention mask, and it
cross-attends to all 77 positions. The states at the padding positions are
not zeros: they are what CLIP computes for the pad tokens (each sees the
prompt before it), and the UNet learned to use them. So every prompt here is
padded to ``max_tokens``, the encoder runs without a mask, and every
position is reported as real (``mask`` all True). A batch then never changes
a prompt's embedding, because every row has the same length.

The state dict is the text encoder's, named ``text_model.*`` as in SD's
releases; the config and tokenizer are assets (``save_assets``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import modiff
from modiff.protocols import TextEmbedding
from modiff_clip.encoding import check_text_tower, hidden_states, pad_id, token_rows
from modiff_clip.hf import config_key, load_text_model, load_tokenizer, quiet, resolve_pretrained, text_config

ASSETS_FILE = "modiff_sd_clip.json"
ASSETS_FORMAT = "modiff-sd-clip/1"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)


class SdClipEmbedder(nn.Module):
    """Prompts -> CLIP hidden states padded to ``max_tokens``, as SD feeds its UNet."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, max_tokens: int | None = None, skip_layers: int = 0):
        super().__init__()
        # transformers 4 wraps the transformer in `CLIPTextModel.text_model`; 5 does not.
        # Registering the transformer itself names the state dict `text_model.*` either way.
        self.text_model = getattr(model, "text_model", model)
        self.tokenizer = tokenizer
        self._requested_tokens = max_tokens
        self.skip_layers = int(skip_layers)
        self.needs_training = False
        self.joint_training = False
        self._check()

    @classmethod
    def from_folder(cls, path: str | Path, *, max_tokens: int | None = None, skip_layers: int = 0) -> SdClipEmbedder:
        """The encoder and tokenizer of a local folder (see :func:`modiff_clip.hf.resolve_pretrained`).
        Its weights, if it has any, must cover the encoder; a folder with none
        (an imported run's assets) gives an encoder shaped by its config, for
        the run's weights to be loaded into."""
        model_dir, token_dir = resolve_pretrained(path)
        model = load_text_model(model_dir, require_weights=False)
        tokenizer = load_tokenizer(token_dir)
        return cls(model, tokenizer, max_tokens=max_tokens, skip_layers=skip_layers)

    def _check(self) -> None:
        check_text_tower(
            self.config, self.tokenizer, max_tokens=self._requested_tokens, skip_layers=self.skip_layers
        )

    # -- properties ------------------------------------------------------------

    @property
    def config(self) -> Any:
        return self.text_model.config

    @property
    def dim(self) -> int:
        return int(self.config.hidden_size)

    @property
    def max_tokens(self) -> int:
        """``max_tokens`` if set, else the tokenizer's ``model_max_length`` (capped by the positions)."""
        if self._requested_tokens is not None:
            return self._requested_tokens
        return min(int(self.tokenizer.model_max_length), int(self.config.max_position_embeddings))

    @property
    def device(self) -> torch.device:
        return self.text_model.embeddings.token_embedding.weight.device

    # -- embedding -------------------------------------------------------------

    def tokenize(self, prompts: Sequence[str]) -> Tensor:
        """Token ids ``[B, max_tokens]``: start token, prompt, end token, pad tokens.

        Longer prompts keep their first ``max_tokens - 1`` tokens and the end
        token (what the tokenizer's own truncation does), with a warning.
        """
        rows = token_rows(self.tokenizer, prompts, self.max_tokens)
        ids, _ = modiff.pad_token_rows(rows, pad_id(self.tokenizer), device=self.device, min_length=self.max_tokens)
        return ids

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        ids = self.tokenize(prompts)
        tokens, pooled = hidden_states(self.text_model, ids, skip_layers=self.skip_layers)
        mask = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        return TextEmbedding(tokens=tokens, mask=mask, pooled=pooled)

    def forward(self, prompts: Sequence[str]) -> TextEmbedding:
        return self.embed(prompts)

    # -- assets ----------------------------------------------------------------

    def save_assets(self, directory: Path) -> None:
        """The config and tokenizer as a Hugging Face folder (weights are in the run's safetensors)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with quiet():
            self.config.save_pretrained(str(directory))
            self.tokenizer.save_pretrained(str(directory))
        (directory / ASSETS_FILE).write_text(json.dumps({"format": ASSETS_FORMAT}) + "\n", encoding="utf-8")

    def load_assets(self, directory: Path) -> None:
        """Reload the tokenizer; rebuild the encoder if the saved config differs."""
        from transformers import CLIPTextModel

        directory = Path(directory)
        config = text_config(directory)
        tokenizer = load_tokenizer(directory)
        if config_key(config) != config_key(self.config):
            device = self.device
            with quiet():
                model = CLIPTextModel(config).to(device)
            self.text_model = getattr(model, "text_model", model)
        self.tokenizer = tokenizer
        self._check()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_tokens={self.max_tokens}, skip_layers={self.skip_layers}"
