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
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import modiff
from modiff.protocols import TextEmbedding
from modiff_clip.hf import config_key, load_tokenizer, quiet, resolve_pretrained

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


def load_config(directory: Path) -> Any:
    """The ``CLIPTextConfig`` of a text-encoder folder, or the text tower's of a full CLIP folder."""
    from transformers import CLIPTextConfig

    path = directory / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise modiff.WeightsError(f"{path} is unreadable: {exc}") from None
    if data.get("model_type") == "clip":  # a full CLIP folder: its text tower
        data = {**data.get("text_config", {}), "model_type": "clip_text_model"}
    if data.get("model_type", "clip_text_model") != "clip_text_model":
        raise modiff.WeightsError(f"{path} describes a {data.get('model_type')!r} model, not a CLIP text encoder")
    with quiet():
        return CLIPTextConfig.from_dict({k: v for k, v in data.items() if k != "model_type"})


def build_text_model(directory: Path) -> nn.Module:
    """A ``CLIPTextModel``: with the folder's safetensors weights if it has
    any, else shaped by its config (the run's weights are loaded next)."""
    from transformers import CLIPTextModel

    config = load_config(directory)
    if any(directory.glob("*.safetensors")):
        try:
            with quiet():
                return CLIPTextModel.from_pretrained(
                    str(directory), local_files_only=True, use_safetensors=True, dtype=torch.float32
                )
        except Exception as exc:
            raise modiff.WeightsError(
                f"could not load the CLIP text encoder in {directory}: {type(exc).__name__}: {exc}"
            ) from None
    with quiet():
        return CLIPTextModel(config)


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
        model_dir, token_dir = resolve_pretrained(path)
        model, tokenizer = build_text_model(model_dir), load_tokenizer(token_dir)
        return cls(model, tokenizer, max_tokens=max_tokens, skip_layers=skip_layers)

    def _check(self) -> None:
        config = self.config
        positions = int(config.max_position_embeddings)
        if self._requested_tokens is not None and self._requested_tokens > positions:
            raise ValueError(
                f"max_tokens = {self._requested_tokens} exceeds the {positions} positions of this CLIP text encoder; "
                f"use at most {positions}"
            )
        if self.skip_layers >= int(config.num_hidden_layers):
            raise ValueError(
                f"skip_layers = {self.skip_layers} leaves no layer of the {config.num_hidden_layers}-layer text encoder"
            )
        if len(self.tokenizer) > int(config.vocab_size):
            raise modiff.WeightsError(
                f"the tokenizer has {len(self.tokenizer)} tokens but the text encoder only {config.vocab_size} "
                "embeddings: they do not belong together"
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
        if isinstance(prompts, str):
            raise TypeError("embed takes a sequence of prompts; wrap a single prompt in a list")
        length = self.max_tokens
        with quiet():
            rows = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        too_long = [len(r) for r in rows if len(r) > length]
        if too_long:
            warnings.warn(
                f"{len(too_long)} prompt(s) have up to {max(too_long)} CLIP tokens; only the first "
                f"max_tokens = {length} (start and end tokens included) are used",
                modiff.TruncationWarning,
                stacklevel=3,
            )
        ids = torch.full((len(rows), length), pad, dtype=torch.long)
        for b, r in enumerate(rows):
            r = r if len(r) <= length else [*r[: length - 1], eos]
            ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids.to(self.device)

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        ids = self.tokenize(prompts)
        out = self.text_model(input_ids=ids, output_hidden_states=self.skip_layers > 0)
        if self.skip_layers:
            tokens = self.text_model.final_layer_norm(out.hidden_states[-(self.skip_layers + 1)])
        else:
            tokens = out.last_hidden_state
        mask = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        return TextEmbedding(tokens=tokens, mask=mask, pooled=out.pooler_output)

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
        config = load_config(directory)
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
