"""One conditioner made of up to three parts; the registered conditioners pick which.

The latent-diffusion paper conditions a denoiser in two ways: concatenating
conditioning maps to its input, and cross-attending to a token sequence; a
third common way adds a vector to the time embedding. Each part turns the text
embedding into one field of :class:`Conditioning`:

* maps (``concat``): pooled text -> linear -> ``C`` numbers, broadcast over the
  latent grid as ``C`` constant feature maps;
* context (``context``, ``context_mask``): token embeddings -> linear, per
  token, with the text's padding mask passed through;
* vector (``vector``): pooled text -> linear.

``cross-attention`` is the context part, ``concat`` the maps, ``vector`` the
vector, ``hybrid`` maps and context, ``none`` nothing. Any of them may append an
image context (a mask or a masked image, already at the latent resolution) to
``concat`` as its last channels.

The null conditioning replaces each text part by a learned embedding (trained
with the denoiser through condition dropout) or by zeros. The null context is
one "real" position holding the null token followed by padding, so its length
can match the prompts' and rows can be mixed per sample.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from modiff.protocols import Conditioning, ConditioningSpec, TextEmbedding


class PartsConditioner(nn.Module):
    """Text (and an optional image context) to :class:`Conditioning`, with a null.

    Args:
        text_dim: width of the text embedding (``None`` when no part uses text).
        latent_size: side of the latent grid the maps are broadcast over.
        maps: feature maps from the pooled text (0 for none).
        context_dim: width of the context (``None`` for none).
        project_context: learn a linear map for the tokens; else pass them through.
        vector_dim: width of the vector (``None`` for none).
        null: ``"learned"`` or ``"zeros"``.
        image_context_channels: channels of an image context appended to ``concat``.
    """

    def __init__(
        self,
        *,
        text_dim: int | None,
        latent_size: int | None,
        maps: int = 0,
        context_dim: int | None = None,
        project_context: bool = True,
        vector_dim: int | None = None,
        null: str = "zeros",
        image_context_channels: int = 0,
    ):
        super().__init__()
        uses_text = bool(maps) or context_dim is not None or vector_dim is not None
        if uses_text and text_dim is None:
            raise ValueError(
                "this conditioner needs a text embedder: configure [text_embedder], or use conditioner 'none'"
            )
        if null not in ("learned", "zeros"):
            raise ValueError(f'null must be "learned" or "zeros", got {null!r}')
        if not project_context and context_dim is not None and context_dim != text_dim:
            raise ValueError(
                f"projection = false passes the tokens through unchanged, so context_dim ({context_dim}) must equal "
                f"the text width ({text_dim}); remove context_dim or set projection = true"
            )
        if (maps or image_context_channels) and latent_size is None:
            raise ValueError("concatenated channels need the latent size: configure [data] or set [run] image_size")
        self.text_dim = text_dim
        self.latent_size = latent_size
        self.maps = maps
        self.image_context_channels = image_context_channels
        self.null_kind = null
        self.spec = ConditioningSpec(
            concat_channels=maps + image_context_channels, context_dim=context_dim, vector_dim=vector_dim
        )
        learned = null == "learned"
        # Where new tensors go and in what dtype, even for a conditioner without weights.
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

        self.to_maps = nn.Linear(text_dim, maps) if maps else None  # type: ignore[arg-type]
        self.null_maps = nn.Parameter(torch.zeros(maps)) if maps and learned else None
        self.to_context: nn.Module | None = None
        if context_dim is not None:
            self.to_context = nn.Linear(text_dim, context_dim) if project_context else nn.Identity()  # type: ignore[arg-type]
        self.null_context = nn.Parameter(torch.zeros(context_dim)) if context_dim is not None and learned else None
        self.to_vector = nn.Linear(text_dim, vector_dim) if vector_dim is not None else None  # type: ignore[arg-type]
        self.null_vector = nn.Parameter(torch.zeros(vector_dim)) if vector_dim is not None and learned else None

    # -- the protocol --------------------------------------------------------

    def condition(
        self, text: TextEmbedding | None, *, image_context: Tensor | None = None, batch_size: int | None = None
    ) -> Conditioning:
        """The prompts' conditioning; with ``text=None``, the null text parts (plus the image context)."""
        batch = self._batch(text, image_context, batch_size)
        parts = self._null_parts(batch, None) if text is None else self._text_parts(text)
        return self._add_image(parts, image_context, batch)

    def null(
        self, batch_size: int, *, like: TextEmbedding | None = None, image_context: Tensor | None = None
    ) -> Conditioning:
        """The conditioning with the text left out; its context is as long as ``like``'s tokens.

        ``image_context`` is kept as given (zeros when omitted), so guidance and
        condition dropout act on the text only.
        """
        return self._add_image(self._null_parts(batch_size, like), image_context, batch_size)

    # -- the parts -------------------------------------------------------------

    def _text_parts(self, text: TextEmbedding) -> Conditioning:
        if self.text_dim is None:  # `none`: text is accepted and ignored
            return Conditioning()
        if text.tokens.shape[-1] != self.text_dim or text.pooled.shape[-1] != self.text_dim:
            raise ValueError(
                f"the text embedding is {text.tokens.shape[-1]} wide but this conditioner was built for "
                f"{self.text_dim}; build it with the same text embedder"
            )
        dtype = self.anchor.dtype
        concat = context = mask = vector = None
        if self.to_maps is not None:
            values = self.to_maps(text.pooled.to(dtype))
            concat = values[:, :, None, None].expand(-1, -1, self.latent_size, self.latent_size)
        if self.to_context is not None:
            mask = text.mask.to(torch.bool)
            # Zero the padding, so not even a denoiser that ignores the mask sees junk there.
            context = self.to_context(text.tokens.to(dtype)).masked_fill(~mask[..., None], 0.0)
        if self.to_vector is not None:
            vector = self.to_vector(text.pooled.to(dtype))
        return Conditioning(concat, context, mask, vector)

    def _null_parts(self, batch: int, like: TextEmbedding | None) -> Conditioning:
        device, dtype = self.anchor.device, self.anchor.dtype
        concat = context = mask = vector = None
        if self.maps:
            values = (
                self.null_maps if self.null_maps is not None else torch.zeros(self.maps, device=device, dtype=dtype)
            )
            concat = values[None, :, None, None].expand(batch, -1, self.latent_size, self.latent_size)
        if self.spec.context_dim is not None:
            width = self.spec.context_dim
            length = max(1, int(like.tokens.shape[1])) if like is not None else 1
            token = (
                self.null_context if self.null_context is not None else torch.zeros(width, device=device, dtype=dtype)
            )
            padding = torch.zeros(batch, length - 1, width, device=device, dtype=dtype)
            context = torch.cat([token[None, None, :].expand(batch, 1, width), padding], dim=1)
            mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
            mask[:, 0] = True
        if self.spec.vector_dim is not None:
            v = (
                self.null_vector
                if self.null_vector is not None
                else torch.zeros(self.spec.vector_dim, device=device, dtype=dtype)
            )
            vector = v[None, :].expand(batch, -1)
        return Conditioning(concat, context, mask, vector)

    def _add_image(self, parts: Conditioning, image_context: Tensor | None, batch: int) -> Conditioning:
        k = self.image_context_channels
        if image_context is None:
            if not k:
                return parts
            size = self.latent_size
            image_context = torch.zeros(batch, k, size, size, device=self.anchor.device, dtype=self.anchor.dtype)  # type: ignore[arg-type]
        else:
            if not k:
                raise ValueError(
                    "an image context was given but this conditioner takes none; set image_context_channels to "
                    f"its {image_context.shape[1] if image_context.dim() == 4 else '?'} channels"
                )
            if image_context.dim() != 4 or image_context.shape[0] != batch or image_context.shape[1] != k:
                raise ValueError(
                    f"image_context has shape {tuple(image_context.shape)}; expected [{batch}, {k}, h, w] "
                    f"(image_context_channels = {k})"
                )
            image_context = image_context.to(self.anchor.dtype)
        concat = parts.concat
        if concat is not None and concat.shape[-2:] != image_context.shape[-2:]:
            # the text maps are constant over the grid: follow the image context's size
            concat = concat[:, :, :1, :1].expand(-1, -1, *image_context.shape[-2:])
        concat = image_context if concat is None else torch.cat([concat, image_context], dim=1)
        return replace(parts, concat=concat)

    def _batch(self, text: TextEmbedding | None, image_context: Tensor | None, batch_size: int | None) -> int:
        sizes = {
            name: n
            for name, n in (
                ("text", None if text is None else len(text)),
                ("image_context", None if image_context is None else int(image_context.shape[0])),
                ("batch_size", batch_size),
            )
            if n is not None
        }
        if not sizes:
            raise ValueError("condition() needs text, an image context or batch_size to know the batch size")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"inconsistent batch sizes: {sizes}")
        return next(iter(sizes.values()))

    def extra_repr(self) -> str:
        return f"spec={self.spec}, null={self.null_kind!r}"
