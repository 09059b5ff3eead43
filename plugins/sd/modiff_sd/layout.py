"""Parameter names of Stable Diffusion weights in two layouts, derived from the architecture.

*Original* is the single-file layout of the CompVis/LDM code that SD 1.x was
trained with (``model.diffusion_model.input_blocks.1.0.in_layers.0.weight``,
``first_stage_model.encoder.down.0.block.0.norm1.weight``, ...). *Diffusers*
is the layout of diffusers' ``UNet2DConditionModel`` / ``AutoencoderKL`` /
transformers' ``CLIPTextModel``, which modiff's ``unet``, ``kl-autoencoder``
and ``sd-clip`` components use, so for them the diffusers name *is* the
modiff name.

Nothing here is a copied lookup table: both layouts are generated from the
same few facts about the network (levels, residual blocks per level, which
levels attend, whether the middle attends). The original UNet numbers its
blocks in execution order (``input_blocks.i`` with ``i`` running over every
residual block and every downsampler, ``output_blocks.i`` likewise on the way
up) while diffusers groups them by resolution level (``down_blocks.L.resnets.j``);
the original VAE decoder numbers its levels from the highest resolution while
diffusers numbers them in execution order. Inside a block only a few names
differ (``in_layers.0`` is ``norm1``, ...); those renames are listed per kind
of block. The VAE's attention projections are 1x1 convolutions in the
original and linear layers in diffusers: the same numbers, reshaped.

The structure is read from the names themselves (:meth:`UNetStructure.from_original`,
...), so a checkpoint needs no configuration to be renamed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch

Reshape = Literal["to_linear", "to_conv"] | None

#: Where each part of an SD 1.x single-file checkpoint lives.
ORIGINAL_PREFIXES: dict[str, str] = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.transformer.",
}
#: Parts of other model families: recognised so the error can say what the file is.
UNSUPPORTED_PREFIXES: dict[str, str] = {
    "cond_stage_model.model.": "an OpenCLIP text encoder (Stable Diffusion 2.x)",
    "conditioner.embedders.": "two text encoders (Stable Diffusion XL)",
    "model.diffusion_model.joint_blocks.": "an MMDiT denoiser (Stable Diffusion 3)",
}
#: Tensors of a training checkpoint that inference never needs (EMA copies
#: are stored under mangled names; SD 1.x releases merge EMA into the weights).
IGNORED_PREFIXES: tuple[str, ...] = ("model_ema.",)

#: Names inside a block that differ between the layouts, per kind of block
#: (original -> diffusers). Names not listed are the same in both.
INNER_RENAMES: dict[str, dict[str, str]] = {
    "same": {},
    "unet-resnet": {
        "in_layers.0": "norm1",
        "in_layers.2": "conv1",
        "emb_layers.1": "time_emb_proj",
        "out_layers.0": "norm2",
        "out_layers.3": "conv2",
        "skip_connection": "conv_shortcut",
    },
    "vae-resnet": {"nin_shortcut": "conv_shortcut"},
    "vae-attention": {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"},
}
#: Layers that are 1x1 convolutions in the original and linear in diffusers.
CONV_AS_LINEAR: dict[str, frozenset[str]] = {"vae-attention": frozenset({"to_q", "to_k", "to_v", "to_out.0"})}


@dataclass(frozen=True)
class Rename:
    """A tensor's name in the other layout, and how its shape changes (if at all)."""

    target: str
    reshape: Reshape = None

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.reshape == "to_linear":
            return tensor.reshape(tensor.shape[:2])
        if self.reshape == "to_conv":
            return tensor.reshape(*tensor.shape, 1, 1)
        return tensor


Block = tuple[str, str, str]
"""(original prefix, diffusers prefix, kind of block)."""


class BlockMap:
    """Renames tensors between the layouts, given each block's prefix in both.

    A name is split into the longest block prefix it starts with and the
    rest; the prefix is swapped and the rest renamed by the block's kind.
    """

    def __init__(self, blocks: Iterable[Block]):
        self.blocks = list(blocks)
        self._to_diffusers = {o: (d, kind) for o, d, kind in self.blocks}
        self._to_original = {d: (o, kind) for o, d, kind in self.blocks}
        if len(self._to_diffusers) != len(self.blocks) or len(self._to_original) != len(self.blocks):
            raise AssertionError("two blocks share a prefix: the structure is inconsistent")

    def to_diffusers(self, name: str) -> Rename | None:
        """The diffusers name of an original tensor name, or None if no block holds it."""
        found = _split(name, self._to_diffusers)
        if found is None:
            return None
        (target, kind), rest = found
        inner = _rename_inner(rest, INNER_RENAMES[kind])
        return Rename(f"{target}.{inner}", "to_linear" if _conv_as_linear(kind, inner) else None)

    def to_original(self, name: str) -> Rename | None:
        """The original name of a diffusers tensor name, or None if no block holds it."""
        found = _split(name, self._to_original)
        if found is None:
            return None
        (target, kind), rest = found
        inner = _rename_inner(rest, {v: k for k, v in INNER_RENAMES[kind].items()})
        return Rename(f"{target}.{inner}", "to_conv" if _conv_as_linear(kind, rest) else None)


def _split(name: str, table: Mapping[str, tuple[str, str]]) -> tuple[tuple[str, str], str] | None:
    """``(table entry, rest)`` for the longest dotted prefix of ``name`` in ``table``."""
    parts = name.split(".")
    for n in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in table:
            return table[prefix], ".".join(parts[n:])
    return None


def _longest_prefix(rest: str, candidates: Iterable[str]) -> str | None:
    best = None
    for c in candidates:
        if (rest == c or rest.startswith(c + ".")) and (best is None or len(c) > len(best)):
            best = c
    return best


def _rename_inner(rest: str, renames: Mapping[str, str]) -> str:
    """``rest`` with its longest head found in ``renames`` replaced."""
    head = _longest_prefix(rest, renames)
    return rest if head is None else renames[head] + rest[len(head) :]


def _conv_as_linear(kind: str, diffusers_rest: str) -> bool:
    """Whether a name inside a block (diffusers side) is a linear weight stored as a 1x1 convolution."""
    head = _longest_prefix(diffusers_rest, CONV_AS_LINEAR.get(kind, ()))
    return head is not None and diffusers_rest == f"{head}.weight"


def _indices(keys: Iterable[str], pattern: str) -> set[int]:
    regex = re.compile(pattern)
    return {int(m.group(1)) for k in keys if (m := regex.match(k))}


class LayoutError(ValueError):
    """The tensor names do not follow the expected layout; says which names and why."""


# --------------------------------------------------------------------------
# UNet
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class UNetStructure:
    """What the UNet's names depend on.

    Attributes:
        attention: per resolution level, highest first: whether it has transformer blocks.
        layers: residual blocks per level on the way down (one more on the way up).
        mid_attention: whether the middle block is resnet, transformer, resnet.
        class_embedding: whether a vector embedding (``label_emb``) is added to the time embedding.
    """

    attention: tuple[bool, ...]
    layers: int
    mid_attention: bool = True
    class_embedding: bool = False

    @property
    def levels(self) -> int:
        return len(self.attention)

    def blocks(self) -> list[Block]:
        """Every block's prefix in both layouts, in execution order."""
        out: list[Block] = [
            ("time_embed.0", "time_embedding.linear_1", "same"),
            ("time_embed.2", "time_embedding.linear_2", "same"),
            ("input_blocks.0.0", "conv_in", "same"),
        ]
        if self.class_embedding:
            out += [
                ("label_emb.0.0", "class_embedding.linear_1", "same"),
                ("label_emb.0.2", "class_embedding.linear_2", "same"),
            ]
        per_level = self.layers + 1  # residual blocks plus the downsampler (or upsampler) slot
        for level, attends in enumerate(self.attention):
            for j in range(self.layers):
                i = 1 + level * per_level + j
                out.append((f"input_blocks.{i}.0", f"down_blocks.{level}.resnets.{j}", "unet-resnet"))
                if attends:
                    out.append((f"input_blocks.{i}.1", f"down_blocks.{level}.attentions.{j}", "same"))
            if level < self.levels - 1:
                i = (level + 1) * per_level
                out.append((f"input_blocks.{i}.0.op", f"down_blocks.{level}.downsamplers.0.conv", "same"))
        out.append(("middle_block.0", "mid_block.resnets.0", "unet-resnet"))
        if self.mid_attention:
            out.append(("middle_block.1", "mid_block.attentions.0", "same"))
            out.append(("middle_block.2", "mid_block.resnets.1", "unet-resnet"))
        for u in range(self.levels):
            level = self.levels - 1 - u
            attends = self.attention[level]
            for j in range(per_level):
                i = u * per_level + j
                out.append((f"output_blocks.{i}.0", f"up_blocks.{u}.resnets.{j}", "unet-resnet"))
                if attends:
                    out.append((f"output_blocks.{i}.1", f"up_blocks.{u}.attentions.{j}", "same"))
                if j == per_level - 1 and level > 0:
                    slot = 2 if attends else 1
                    out.append((f"output_blocks.{i}.{slot}.conv", f"up_blocks.{u}.upsamplers.0.conv", "same"))
        out += [("out.0", "conv_norm_out", "same"), ("out.2", "conv_out", "same")]
        return out

    def block_map(self) -> BlockMap:
        return BlockMap(self.blocks())

    @classmethod
    def from_original(cls, keys: Iterable[str]) -> UNetStructure:
        """Read the structure from original-layout names (without ``model.diffusion_model.``)."""
        keys = list(keys)
        inputs = _indices(keys, r"input_blocks\.(\d+)\.")
        downs = _indices(keys, r"input_blocks\.(\d+)\.0\.op\.")
        if not inputs or 0 not in inputs:
            raise LayoutError("no input_blocks.0 (the UNet's first convolution): not an SD UNet in the original layout")
        levels = len(downs) + 1
        count = max(inputs) + 1
        layers = count // levels - 1
        expected_downs = {(level + 1) * (layers + 1) for level in range(levels - 1)}
        if count % levels or layers < 1 or downs != expected_downs or inputs != set(range(count)):
            raise LayoutError(
                f"input_blocks 0..{max(inputs)} with downsamplers at {sorted(downs)} do not form levels of equal "
                "depth; this is not an SD-style UNet"
            )
        attention = tuple(
            any(k.startswith(f"input_blocks.{1 + level * (layers + 1)}.1.") for k in keys) for level in range(levels)
        )
        return cls(
            attention=attention,
            layers=layers,
            mid_attention=any(k.startswith("middle_block.2.") for k in keys),
            class_embedding=any(k.startswith("label_emb.") for k in keys),
        )

    @classmethod
    def from_diffusers(cls, keys: Iterable[str]) -> UNetStructure:
        """Read the structure from diffusers-layout names."""
        keys = list(keys)
        levels = _indices(keys, r"down_blocks\.(\d+)\.")
        if not levels:
            raise LayoutError("no down_blocks.*: not a UNet in the diffusers layout")
        layers = len(_indices(keys, r"down_blocks\.0\.resnets\.(\d+)\."))
        attention = tuple(
            any(k.startswith(f"down_blocks.{L}.attentions.") for k in keys) for L in range(max(levels) + 1)
        )
        return cls(
            attention=attention,
            layers=layers,
            mid_attention=any(k.startswith("mid_block.attentions.") for k in keys),
            class_embedding=any(k.startswith("class_embedding.") for k in keys),
        )


# --------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class VAEStructure:
    """What the autoencoder's names depend on: levels, encoder residual blocks
    per level (the decoder has one more), middle attention."""

    levels: int
    layers: int
    mid_attention: bool = True

    def blocks(self) -> list[Block]:
        out: list[Block] = []
        for side in ("encoder", "decoder"):
            out += [
                (f"{side}.conv_in", f"{side}.conv_in", "same"),
                (f"{side}.mid.block_1", f"{side}.mid_block.resnets.0", "vae-resnet"),
                (f"{side}.mid.block_2", f"{side}.mid_block.resnets.1", "vae-resnet"),
                (f"{side}.norm_out", f"{side}.conv_norm_out", "same"),
                (f"{side}.conv_out", f"{side}.conv_out", "same"),
            ]
            if self.mid_attention:
                out.append((f"{side}.mid.attn_1", f"{side}.mid_block.attentions.0", "vae-attention"))
        for level in range(self.levels):
            down = f"encoder.down_blocks.{level}"
            for j in range(self.layers):
                out.append((f"encoder.down.{level}.block.{j}", f"{down}.resnets.{j}", "vae-resnet"))
            if level < self.levels - 1:
                out.append((f"encoder.down.{level}.downsample.conv", f"{down}.downsamplers.0.conv", "same"))
        # The decoder runs from the lowest resolution; the original numbers its levels from the highest.
        for u in range(self.levels):
            level = self.levels - 1 - u
            for j in range(self.layers + 1):
                out.append((f"decoder.up.{level}.block.{j}", f"decoder.up_blocks.{u}.resnets.{j}", "vae-resnet"))
            if level > 0:
                out.append((f"decoder.up.{level}.upsample.conv", f"decoder.up_blocks.{u}.upsamplers.0.conv", "same"))
        out += [("quant_conv", "quant_conv", "same"), ("post_quant_conv", "post_quant_conv", "same")]
        return out

    def block_map(self) -> BlockMap:
        return BlockMap(self.blocks())

    @classmethod
    def from_original(cls, keys: Iterable[str]) -> VAEStructure:
        keys = list(keys)
        levels = _indices(keys, r"encoder\.down\.(\d+)\.")
        if not levels:
            raise LayoutError("no encoder.down.*: not an SD autoencoder in the original layout")
        return cls(
            levels=max(levels) + 1,
            layers=len(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\.")),
            mid_attention=any(k.startswith("encoder.mid.attn_1.") for k in keys),
        )

    @classmethod
    def from_diffusers(cls, keys: Iterable[str]) -> VAEStructure:
        keys = list(keys)
        levels = _indices(keys, r"encoder\.down_blocks\.(\d+)\.")
        if not levels:
            raise LayoutError("no encoder.down_blocks.*: not an autoencoder in the diffusers layout")
        return cls(
            levels=max(levels) + 1,
            layers=len(_indices(keys, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")),
            mid_attention=any(k.startswith("encoder.mid_block.attentions.") for k in keys),
        )


# --------------------------------------------------------------------------
# Text encoder
# --------------------------------------------------------------------------

TEXT_PREFIX = "text_model."


def text_canonical(name: str) -> str:
    """A CLIP text-encoder name as ``text_model.*`` (the layout of SD's releases
    and of :class:`modiff_sd.text.SdClipEmbedder`'s state dict).

    transformers 5 saves ``CLIPTextModel`` without the ``text_model.`` level
    and old SD checkpoints stored ``cond_stage_model.transformer.encoder...``;
    both name the same tensors.
    """
    return name if name.startswith(TEXT_PREFIX) else TEXT_PREFIX + name


def is_derived(name: str) -> bool:
    """Tensors a loader may drop or rebuild: CLIP's position indices are ``arange``."""
    return name.endswith("embeddings.position_ids")


# --------------------------------------------------------------------------
# Whole checkpoints
# --------------------------------------------------------------------------


@dataclass
class OriginalParts:
    """The names of a single-file checkpoint, sorted by part (prefixes stripped)."""

    parts: dict[str, list[str]]
    ignored: list[str]
    unsupported: dict[str, str]
    other: list[str]


def split_original(keys: Iterable[str]) -> OriginalParts:
    """Sort an original checkpoint's names into unet / vae / text_encoder.

    ``other`` holds top-level tensors that belong to no part (the training
    schedule's ``betas``, ``alphas_cumprod``, ...); ``unsupported`` names
    parts of other model families found in the file.
    """
    parts: dict[str, list[str]] = {p: [] for p in ORIGINAL_PREFIXES}
    ignored, other = [], []
    unsupported: dict[str, str] = {}
    for key in keys:
        if key.startswith(IGNORED_PREFIXES):
            ignored.append(key)
            continue
        hit = next((p for p in UNSUPPORTED_PREFIXES if key.startswith(p)), None)
        if hit is not None:
            unsupported.setdefault(hit, UNSUPPORTED_PREFIXES[hit])
            continue
        part = next((p for p, prefix in ORIGINAL_PREFIXES.items() if key.startswith(prefix)), None)
        if part is None:
            other.append(key)
        else:
            parts[part].append(key[len(ORIGINAL_PREFIXES[part]) :])
    return OriginalParts(parts, ignored, unsupported, other)


def to_original_checkpoint(
    unet: Mapping[str, torch.Tensor], vae: Mapping[str, torch.Tensor], text_encoder: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Diffusers-layout state dicts as one original-layout checkpoint (for
    writing single files; the inverse of what :func:`original_renames` reads)."""
    out: dict[str, torch.Tensor] = {}
    for part, tensors, mapper in (
        ("unet", unet, UNetStructure.from_diffusers(unet).block_map()),
        ("vae", vae, VAEStructure.from_diffusers(vae).block_map()),
    ):
        for name, value in tensors.items():
            rename = mapper.to_original(name)
            if rename is None:
                raise LayoutError(f"{part} tensor {name!r} belongs to no block of the layout")
            out[ORIGINAL_PREFIXES[part] + rename.target] = rename.apply(value)
    for name, value in text_encoder.items():
        out[ORIGINAL_PREFIXES["text_encoder"] + text_canonical(name)] = value
    return out


def original_renames(part: str, names: Iterable[str]) -> dict[str, Rename]:
    """original name (without the part prefix) -> diffusers name, for one part.

    Raises :class:`LayoutError` naming a tensor that fits no block.
    """
    names = list(names)
    if part == "text_encoder":
        return {n: Rename(text_canonical(n)) for n in names}
    structure = UNetStructure.from_original(names) if part == "unet" else VAEStructure.from_original(names)
    mapper = structure.block_map()
    out = {}
    for n in names:
        rename = mapper.to_diffusers(n)
        if rename is None:
            raise LayoutError(f"{ORIGINAL_PREFIXES[part]}{n} belongs to no block of an SD {part} with {structure}")
        out[n] = rename
    return out
