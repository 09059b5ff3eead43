"""The CLIP text embedder: a pretrained text encoder from disk, or a small CLIP
trained here, contrastively, on the dataset's image-caption pairs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel

import modiff
from modiff.protocols import Batch, TextEmbedding

from .contrastive import contrastive_loss
from .encoding import check_text_tower, hidden_states, pad_id, token_rows
from .hf import (
    config_key,
    load_text_model,
    load_tokenizer,
    model_type,
    quiet,
    resolve_pretrained,
    save_tokenizer,
    train_tokenizer,
)
from .settings import ClipSettings

METADATA_FILE = "modiff_clip.json"
METADATA_FORMAT = "modiff-clip/1"


def tiny_config(settings: ClipSettings, tokenizer: Any, image_size: int) -> CLIPConfig:
    """A small CLIP (text and vision towers) shaped by ``settings``."""
    patch = settings.patch_size or max(1, image_size // 8)
    if image_size % patch:
        raise ValueError(
            f"patch_size = {patch} does not divide the image size {image_size}; "
            "choose a patch_size that divides it"
        )
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.width,
        intermediate_size=4 * settings.width,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        max_position_embeddings=settings.max_tokens,
        projection_dim=settings.projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = {
        "hidden_size": settings.vision_width,
        "intermediate_size": 4 * settings.vision_width,
        "num_hidden_layers": settings.vision_layers,
        "num_attention_heads": settings.vision_heads,
        "image_size": image_size,
        "patch_size": patch,
        "projection_dim": settings.projection_dim,
    }
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision, projection_dim=settings.projection_dim)


class ClipTextEmbedder(nn.Module):
    """Prompts -> CLIP text tower -> :class:`TextEmbedding`.

    ``tokens`` is the last hidden state (or, with ``skip_layers = k``, the
    hidden state ``k`` layers earlier, passed through the final layer norm as
    Stable Diffusion's "clip skip" does); ``pooled`` is CLIP's pooled output,
    the final state at the end-of-text token. Batches are padded to their
    longest prompt; CLIP's causal attention means a token never sees the
    padding after it, so padding changes nothing.

    ``model`` is a full ``CLIPModel`` when trained here (the vision tower is
    needed only by :meth:`training_loss` and retrieval) or a ``CLIPTextModel``
    loaded from ``pretrained``.
    """

    def __init__(
        self,
        model: CLIPModel | CLIPTextModel,
        tokenizer: Any,
        *,
        max_tokens: int,
        skip_layers: int = 0,
        needs_training: bool = False,
        source: str | None = None,
        joint_training: bool = False,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self._max_tokens = int(max_tokens)
        self.skip_layers = int(skip_layers)
        self.source = source
        #: True for a freshly built small CLIP: the core then runs its contrastive stage.
        self.needs_training = needs_training
        #: Fine-tuned with the denoiser when true; otherwise frozen (its embeddings are cached).
        self.joint_training = bool(joint_training)
        self._check()

    # ------------------------------------------------------------------ build

    @classmethod
    def from_settings(cls, settings: ClipSettings, captions: Iterable[str], image_size: int) -> ClipTextEmbedder:
        if settings.pretrained is not None:
            return cls.from_pretrained(
                settings.pretrained,
                max_tokens=settings.max_tokens,
                skip_layers=settings.skip_layers,
                joint_training=settings.joint_training,
            )
        tokenizer = train_tokenizer(captions, settings.vocab_size)
        config = tiny_config(settings, tokenizer, image_size)
        with quiet():
            model = CLIPModel(config)
        return cls._untrained(model, tokenizer, settings)

    @classmethod
    def _untrained(cls, model: CLIPModel, tokenizer: Any, settings: ClipSettings) -> ClipTextEmbedder:
        """A small CLIP built here (fresh, or shaped for a run's weights): it still needs its stage."""
        return cls(
            model,
            tokenizer,
            max_tokens=settings.max_tokens,
            skip_layers=settings.skip_layers,
            needs_training=True,
            joint_training=settings.joint_training,
        )

    @classmethod
    def from_saved(cls, settings: ClipSettings, folder: Path) -> ClipTextEmbedder:
        """The small CLIP of a trained run, shaped from its saved assets (tokenizer,
        config) for its weights to be loaded into: nothing is fitted again."""
        with quiet():
            config = CLIPConfig.from_pretrained(str(folder), local_files_only=True)
            model = CLIPModel(config)
        tokenizer = load_tokenizer(Path(folder))
        return cls._untrained(model, tokenizer, settings)

    @classmethod
    def from_pretrained(
        cls, path: str, *, max_tokens: int = 77, skip_layers: int = 0, joint_training: bool = False
    ) -> ClipTextEmbedder:
        """A text encoder and tokenizer from a local folder (see :func:`resolve_pretrained`)."""
        model_dir, token_dir = resolve_pretrained(path)
        model = load_text_model(model_dir)
        tokenizer = load_tokenizer(token_dir)
        return cls(
            model, tokenizer, max_tokens=max_tokens, skip_layers=skip_layers, source=str(path),
            joint_training=joint_training,
        )

    def _check(self) -> None:
        check_text_tower(
            self.text_model.config, self.tokenizer, max_tokens=self._max_tokens, skip_layers=self.skip_layers
        )

    # ------------------------------------------------------------------ properties

    @property
    def text_model(self) -> CLIPTextModel:
        return self.model.text_model if isinstance(self.model, CLIPModel) else self.model

    @property
    def dim(self) -> int:
        return int(self.text_model.config.hidden_size)

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def device(self) -> torch.device:
        return self.text_model.embeddings.token_embedding.weight.device

    # ------------------------------------------------------------------ embed

    def tokenize(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(input_ids [B, L], mask [B, L] bool)``, padded to the longest prompt,
        truncated to ``max_tokens`` (keeping the end token) with a warning."""
        rows = token_rows(self.tokenizer, prompts, self._max_tokens)
        return modiff.pad_token_rows(rows, pad_id(self.tokenizer), device=self.device, min_length=2)

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        ids, mask = self.tokenize(prompts)
        tokens, pooled = hidden_states(
            self.text_model, ids, attention_mask=mask.long(), skip_layers=self.skip_layers
        )
        tokens = tokens * mask[..., None].to(tokens.dtype)
        return TextEmbedding(tokens=tokens, mask=mask, pooled=pooled)

    def forward(self, prompts: Sequence[str]) -> TextEmbedding:
        return self.embed(prompts)

    # ------------------------------------------------------------------ contrastive

    def _require_vision(self) -> CLIPModel:
        if not isinstance(self.model, CLIPModel):
            raise modiff.ModiffError(
                f"this CLIP text encoder was loaded from {self.source!r} without a vision tower, so it cannot be "
                "trained contrastively here; remove `pretrained` to train a small CLIP on the dataset"
            )
        return self.model

    def text_features(self, prompts: Sequence[str]) -> Tensor:
        """Projected pooled text features ``[B, P]`` (the contrastive space)."""
        model = self._require_vision()
        ids, mask = self.tokenize(prompts)
        out = model.get_text_features(input_ids=ids, attention_mask=mask.long())
        return out.pooler_output if hasattr(out, "pooler_output") else out

    def image_features(self, images: Tensor) -> Tensor:
        """Projected image features ``[B, P]`` of ``[B, 3, H, W]`` images in [-1, 1]."""
        model = self._require_vision()
        size = model.config.vision_config.image_size
        if images.dim() != 4 or tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"the CLIP vision tower takes [B, 3, {size}, {size}] images; got {tuple(images.shape)}. "
                "It was built for the dataset's image size: rebuild it if the size changed"
            )
        out = model.get_image_features(pixel_values=images.to(self.device))
        return out.pooler_output if hasattr(out, "pooler_output") else out

    def training_loss(self, batch: Batch, step: modiff.TrainingStep | None = None) -> Tensor:
        """Symmetric InfoNCE between the batch's images and captions.

        Every other pair of the *global* batch is a negative: features and
        captions are gathered from every process (``step.gather``), so N
        processes compute the loss one process would.
        """
        model = self._require_vision()
        image = self.image_features(batch.images)
        text = self.text_features(batch.captions)
        captions = list(batch.captions)
        if step is not None and step.world_size > 1:
            image, text, captions = step.gather(image), step.gather(text), step.gather_objects(captions)
        return contrastive_loss(text, image, model.logit_scale, captions)

    def finish_training(self, batches: Iterable[Batch]) -> None:
        """Nothing to estimate after training: mark the model trained."""
        self.needs_training = False

    # ------------------------------------------------------------------ assets

    def save_assets(self, directory: Path) -> None:
        """A Hugging Face folder: config, tokenizer, and (for a model trained
        here) ``model.safetensors``, so ``from_pretrained`` loads it directly.
        A pretrained encoder's weights are not copied again: they are in the
        run's safetensors and in the user's folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        trained_here = isinstance(self.model, CLIPModel)
        with quiet():
            if trained_here:
                self.model.save_pretrained(str(directory), safe_serialization=True)
            else:
                self.model.config.save_pretrained(str(directory))
        save_tokenizer(self.tokenizer, directory)
        metadata = {
            "format": METADATA_FORMAT,
            "trained_here": trained_here,
            "needs_training": self.needs_training,
            "source": self.source,
        }
        (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=1), encoding="utf-8")

    def load_assets(self, directory: Path) -> None:
        """Rebuild the tokenizer and the model's shape from a saved folder
        (the weights follow through ``load_state_dict``)."""
        directory = Path(directory)
        metadata: dict[str, Any] = {}
        meta_path = directory / METADATA_FILE
        if meta_path.is_file():
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
            if metadata.get("format") != METADATA_FORMAT:
                raise modiff.WeightsError(f"{meta_path} is not a modiff CLIP description ({METADATA_FORMAT})")
        kind = model_type(directory)
        config_cls, model_cls = {
            "clip": (CLIPConfig, CLIPModel),
            "clip_text_model": (CLIPTextConfig, CLIPTextModel),
        }.get(kind, (None, None))
        if config_cls is None:
            raise modiff.WeightsError(f"{directory / 'config.json'} describes a {kind!r} model, not CLIP")
        tokenizer = load_tokenizer(directory)
        with quiet():
            config = config_cls.from_pretrained(str(directory), local_files_only=True)
        if not (isinstance(self.model, model_cls) and config_key(self.model.config) == config_key(config)):
            device = self.device
            with quiet():
                self.model = model_cls(config).to(device)
        self.tokenizer = tokenizer
        self.needs_training = bool(metadata.get("needs_training", False))
        self._check()
