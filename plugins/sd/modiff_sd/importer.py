"""``modiff import-sd``: Stable Diffusion weights on disk -> an ordinary run directory.

The run holds the settings (naming ``unet``, ``kl-autoencoder``, ``sd-clip``,
``sd-cross-attention`` and a sampler with the source's schedule, plus
``[run] image_size`` instead of a dataset) and one checkpoint with a
``components/<role>.safetensors`` per component, written with modiff's
checkpoint writer so that :meth:`modiff.Pipeline.load` restores it
like a trained run.

Memory: the components are built on the ``meta`` device only to learn the
names and shapes they expect; then each component's tensors are read one
at a time from the memory-mapped source, renamed, shape-checked, cast to the
run's precision and written, before the next component is read. At no point
is there a second full copy of the model.

The run is assembled in a temporary directory beside ``RUN`` and renamed
into place at the end, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import modiff
from modiff_clip.hf import load_tokenizer

from . import configs, layout
from .layout import Rename
from .sources import Weights, component_weights, open_weights
from .text import TOKENIZER_FILES

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Source part -> modiff role.
ROLES: dict[str, str] = {"unet": "denoiser", "vae": "encoder", "text_encoder": "text_embedder"}
#: diffusers pipeline class and the component classes this importer understands.
PIPELINE_CLASSES = ("StableDiffusionPipeline",)
#: Each part's accepted classes; transformers 5 has one CLIP tokenizer class and
#: keeps ``CLIPTokenizerFast`` as another name for it, which many SD folders name.
COMPONENT_CLASSES: dict[str, tuple[str, ...]] = {
    "unet": ("UNet2DConditionModel",),
    "vae": ("AutoencoderKL",),
    "text_encoder": ("CLIPTextModel",),
    "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"),
}
SAMPLE_DEFAULTS = {"steps": 50, "guidance": 7.5}


@dataclass
class Part:
    """One component of the source: its files and, per modiff tensor name,
    the source tensor it comes from."""

    weights: Weights
    renames: dict[str, tuple[str, Rename]]  # modiff name -> (source name, rename)

    def shape(self, name: str) -> tuple[int, ...]:
        source, rename = self.renames[name]
        shape = self.weights.shape(source)
        if rename.reshape == "to_linear":
            return shape[:2]
        if rename.reshape == "to_conv":
            return (*shape, 1, 1)
        return shape


@dataclass
class Source:
    """Everything read from SOURCE before anything is written."""

    path: Path
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]
    text_config: dict[str, Any]
    tokenizer_dir: Path
    scheduler_table: dict[str, Any]
    parts: dict[str, Part]
    notes: list[str] = field(default_factory=list)
    #: Where the configurations came from, for error messages.
    config_origin: str = "the tensor shapes"

    def described_by(self, part: str) -> str:
        if self.config_origin == "the tensor shapes":
            return "configured from the tensor shapes"
        return f"configured by {Path(self.config_origin) / part / 'config.json'}"


@dataclass
class ImportResult:
    run: Path
    notes: list[str]
    parameters: dict[str, int]


# --------------------------------------------------------------------------
# Reading the source
# --------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise modiff.WeightsError(f"missing part: {path} does not exist ({what})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise modiff.WeightsError(f"{path} is not readable JSON ({exc}); it may be truncated or corrupt") from None
    if not isinstance(data, dict):
        raise modiff.WeightsError(f"{path} does not hold a JSON object")
    return data


def _check_model_index(root: Path) -> None:
    index = root / "model_index.json"
    if not index.is_file():
        return
    data = _read_json(index, "the pipeline's index")
    cls = data.get("_class_name")
    if cls not in PIPELINE_CLASSES:
        raise modiff.WeightsError(
            f"{index} describes a {cls!r}; import-sd reads Stable Diffusion 1.x-style pipelines "
            f"({', '.join(PIPELINE_CLASSES)})"
        )
    for part, wanted in COMPONENT_CLASSES.items():
        entry = data.get(part)
        if isinstance(entry, list) and len(entry) == 2 and entry[1] is not None and entry[1] not in wanted:
            raise modiff.WeightsError(f"{index}: {part} is a {entry[1]!r}; import-sd reads a {' or '.join(wanted)}")


Configs = tuple[dict[str, Any], dict[str, Any], dict[str, Any], Path, dict[str, Any] | None]


def _configs_from_folder(root: Path) -> Configs:
    """unet, vae and text-encoder configs, tokenizer folder, scheduler config (or None) of a diffusers folder."""
    unet = _read_json(root / "unet" / "config.json", "the UNet's configuration")
    vae = _read_json(root / "vae" / "config.json", "the autoencoder's configuration")
    text = _read_json(root / "text_encoder" / "config.json", "the text encoder's configuration")
    tokenizer = root / "tokenizer"
    if not tokenizer.is_dir():
        raise modiff.WeightsError(f"missing part: {tokenizer} does not exist (the CLIP tokenizer)")
    scheduler_path = root / "scheduler" / "scheduler_config.json"
    scheduler = _read_json(scheduler_path, "the scheduler") if scheduler_path.is_file() else None
    return unet, vae, text, tokenizer, scheduler


def _scheduler(config: dict[str, Any] | None, notes: list[str]) -> dict[str, Any]:
    if config is None:
        notes.append("no scheduler configuration: using SD 1.x's schedule with DDIM (leading spacing, steps_offset 1)")
        return dict(configs.SD_SCHEDULER)
    table, note = configs.scheduler_table(config)
    if note:
        notes.append(note)
    return table


def read_diffusers_folder(root: Path, dtype: torch.dtype) -> Source:
    """A diffusers ``StableDiffusionPipeline`` folder (``save_pretrained`` layout)."""
    _check_model_index(root)
    unet, vae, text, tokenizer, scheduler = _configs_from_folder(root)
    notes: list[str] = []
    parts = {}
    for part in ROLES:
        weights = component_weights(root / part, dtype)
        canon = layout.text_canonical if part == "text_encoder" else (lambda n: n)
        renames: dict[str, tuple[str, Rename]] = {}
        for name in weights.keys():
            target = canon(name)
            if target in renames:
                raise modiff.WeightsError(
                    f"{weights.file_of(name)}: tensors {renames[target][0]!r} and {name!r} are the same tensor"
                )
            renames[target] = (name, Rename(target))
        parts[part] = Part(weights, renames)
    return Source(root, unet, vae, text, tokenizer, _scheduler(scheduler, notes), parts, notes, str(root))


def read_single_file(
    path: Path, dtype: torch.dtype, *, config_dir: Path | None, tokenizer_dir: Path | None, image_size: int | None
) -> Source:
    """An original-layout checkpoint; configurations from ``config_dir`` or from the shapes."""
    weights = open_weights(path, dtype)
    split = layout.split_original(weights.keys())
    if split.unsupported:
        raise modiff.WeightsError(
            f"{path} holds {', '.join(split.unsupported.values())}; import-sd reads Stable Diffusion 1.x checkpoints "
            "(a CLIP ViT text encoder under cond_stage_model.transformer.)"
        )
    names = {"unet": "the UNet", "vae": "the autoencoder", "text_encoder": "the text encoder"}
    for part, found in split.parts.items():
        if not found:
            raise modiff.WeightsError(
                f"missing part: {path} has no tensors of {names[part]} ({layout.ORIGINAL_PREFIXES[part]}*)"
            )
    parts = {}
    for part, found in split.parts.items():
        prefix = layout.ORIGINAL_PREFIXES[part]
        try:
            renames = layout.original_renames(part, found)
        except layout.LayoutError as exc:
            raise modiff.WeightsError(f"{path}: {exc}") from None
        parts[part] = Part(weights, {r.target: (prefix + name, r) for name, r in renames.items()})
    notes = []
    if split.ignored:
        notes.append(f"ignored {len(split.ignored)} training-only tensors (model_ema.*)")
    if config_dir is not None:
        unet, vae, text, tokenizer, scheduler = _configs_from_folder(config_dir)
        tokenizer = tokenizer_dir or tokenizer
    else:
        if tokenizer_dir is None:
            raise modiff.ModiffError(
                f"{path} is a single-file checkpoint, which holds no tokenizer: give --tokenizer FOLDER (the CLIP "
                "tokenizer's vocab.json and merges.txt, or tokenizer.json), or --config FOLDER with a diffusers "
                "folder's configurations and tokenizer/"
            )
        tokenizer, scheduler = tokenizer_dir, None
        unet_part, vae_part, text_part = parts["unet"], parts["vae"], parts["text_encoder"]
        vae = configs.vae_config_from_shapes(list(vae_part.renames), vae_part.shape)
        size = image_size or configs.SD_IMAGE_SIZE
        f = 2 ** (len(vae["block_out_channels"]) - 1)
        unet = configs.unet_config_from_shapes(list(unet_part.renames), unet_part.shape, sample_size=size // f)
        text = configs.text_config_from_shapes(list(text_part.renames), text_part.shape, load_tokenizer(tokenizer))
        notes.append(
            "configurations read from the tensor shapes with SD 1.x's conventions (8 UNet attention heads, 64-wide "
            "CLIP heads, 32 normalisation groups, latent scale 0.18215); give --config FOLDER for other models"
        )
    origin = str(config_dir) if config_dir is not None else "the tensor shapes"
    return Source(path, unet, vae, text, tokenizer, _scheduler(scheduler, notes), parts, notes, origin)


def read_source(
    source: Path, dtype: torch.dtype, *, config_dir: Path | None = None, tokenizer_dir: Path | None = None,
    image_size: int | None = None,
) -> Source:
    if source.is_dir():
        if config_dir is not None or tokenizer_dir is not None:
            raise modiff.ModiffError(
                "--config and --tokenizer are for single-file checkpoints; a diffusers folder has its own"
            )
        return read_diffusers_folder(source, dtype)
    if source.is_file():
        return read_single_file(
            source, dtype, config_dir=config_dir, tokenizer_dir=tokenizer_dir, image_size=image_size
        )
    raise modiff.ModiffError(
        f"{source} does not exist; give a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/) "
        "or a single-file checkpoint (.safetensors, or .ckpt read with weights-only loading)"
    )


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------


def settings_table(
    src: Source, run: Path, text_folder: Path, *, precision: str, image_size: int | None
) -> dict[str, Any]:
    """The run's settings: modiff's components by name, with the source's shapes."""
    unet = configs.unet_table(src.unet_config, precision=precision)
    vae, _ = configs.vae_table(src.vae_config)
    latent = vae["latent_channels"]
    for key in ("in_channels", "out_channels"):
        if int(src.unet_config.get(key, 4)) != latent:
            raise modiff.WeightsError(
                f"the UNet ({src.described_by('unet')}) has {key} = {src.unet_config.get(key)} but the autoencoder "
                f"has {latent} latent channels; "
                "import-sd reads text-to-image UNets that denoise the latent alone (no inpainting UNets)"
            )
    width = int(src.text_config.get("hidden_size", 0))
    if unet["cross_attention_dim"] != width:
        raise modiff.WeightsError(
            f"the UNet ({src.described_by('unet')}) cross-attends to width {unet['cross_attention_dim']} but the text "
            f"encoder's hidden size is {width} ({src.described_by('text_encoder')})"
        )
    f = 2 ** (len(vae["channels"]) - 1)
    size = image_size or int(src.unet_config.get("sample_size") or configs.SD_IMAGE_SIZE // f) * f
    tokenizer = load_tokenizer(src.tokenizer_dir)
    positions = int(src.text_config.get("max_position_embeddings", 77))
    max_tokens = min(int(tokenizer.model_max_length), positions)
    return {
        "run": {"name": run.name, "runs_dir": str(run.parent), "image_size": size, "precision": precision},
        "encoder": vae,
        "text_embedder": {"plugin": "sd-clip", "pretrained": str(text_folder), "max_tokens": max_tokens},
        "conditioner": {"plugin": "sd-cross-attention"},
        "denoiser": unet,
        "scheduler": src.scheduler_table,
        "sample": dict(SAMPLE_DEFAULTS),
    }


def resolve(table: Mapping[str, Any]) -> modiff.ResolvedSettings:
    return modiff.load_settings_files(base=table, environ={})


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def write_text_assets(src: Source, folder: Path) -> None:
    """The text embedder's assets (what ``SdClipEmbedder.save_assets`` writes):
    the encoder's config and the tokenizer's files."""
    from .text import ASSETS_FILE, ASSETS_FORMAT

    folder.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in src.text_config.items() if not k.startswith("_")}
    config.setdefault("model_type", "clip_text_model")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    copied = [name for name in TOKENIZER_FILES if (src.tokenizer_dir / name).is_file()]
    if not any(name in copied for name in ("tokenizer.json", "vocab.json")):
        raise modiff.WeightsError(
            f"missing part: no CLIP tokenizer in {src.tokenizer_dir} (tokenizer.json, or vocab.json and merges.txt)"
        )
    for name in copied:
        shutil.copyfile(src.tokenizer_dir / name, folder / name)
    (folder / ASSETS_FILE).write_text(json.dumps({"format": ASSETS_FORMAT}) + "\n", encoding="utf-8")


def _shown(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")


def component_tensors(
    role: str, expected: Mapping[str, torch.Tensor], part: Part | None, extra: Mapping[str, torch.Tensor],
    described_by: str = "",
) -> dict[str, torch.Tensor]:
    """The component's state dict read from ``part``: every expected name
    present, with the expected shape, or a :class:`modiff.WeightsError`
    naming the file and the tensors. Checked before any tensor is read."""
    renames = part.renames if part is not None else {}
    where = part.weights.describe() if part is not None else "(nothing)"
    suffix = f" {described_by}" if described_by else ""
    missing = [n for n in expected if n not in extra and n not in renames and not layout.is_derived(n)]
    unexpected = [src for n, (src, _) in renames.items() if n not in expected and not layout.is_derived(n)]
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} tensor(s) the {role} needs are missing: {_shown(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} tensor(s) fit nowhere in it: {_shown(unexpected)}")
        raise modiff.WeightsError(f"{where} does not fit the {role}{suffix}: {'; '.join(problems)}")
    for name, value in expected.items():
        if name in renames:
            got = part.shape(name)  # type: ignore[union-attr]
            if got != tuple(value.shape):
                source = renames[name][0]
                raise modiff.WeightsError(
                    f"{part.weights.file_of(source)}: tensor {source!r} has shape {got} "  # type: ignore[union-attr]
                    f"but the {role} ({name!r}) expects {tuple(value.shape)}; the weights do not match the "
                    f"configuration{suffix}"
                )
    out: dict[str, torch.Tensor] = {}
    for name, value in expected.items():
        if name in extra:
            out[name] = extra[name]
        elif name in renames:
            source, rename = renames[name]
            out[name] = rename.apply(part.weights.get(source))  # type: ignore[union-attr]
        else:  # derived: CLIP's position indices
            out[name] = torch.arange(value.shape[-1], dtype=value.dtype).expand(value.shape).clone()
    return out


class _CopiedAssets:
    """Stands for a component whose assets are a folder already written."""

    def __init__(self, folder: Path):
        self.folder = folder

    def save_assets(self, directory: Path) -> None:
        shutil.copytree(self.folder, directory, dirs_exist_ok=True)


WEIGHTED_ROLES = ("encoder", "text_embedder", "conditioner", "denoiser")
#: Where an imported run keeps the text encoder's config and tokenizer (its `pretrained` folder).
IMPORTED_TEXT = Path("imported") / "text_embedder"


def _meta_components(resolved: modiff.ResolvedSettings) -> Any:
    """The components that hold weights, built on the meta device (shapes only, no memory)."""
    weighted = {k: v for k, v in resolved.components.items() if k in WEIGHTED_ROLES}
    shapes_only = dataclasses.replace(resolved, components=weighted)
    with torch.device("meta"):
        return modiff.build(shapes_only, device="meta")


def import_sd(
    source: str | os.PathLike[str],
    run: str | os.PathLike[str],
    *,
    config_dir: str | os.PathLike[str] | None = None,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    precision: str = "fp32",
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> ImportResult:
    """Import SD weights from ``source`` into the run directory ``run``.

    Args:
        source: a diffusers folder or an original single-file checkpoint.
        run: the run directory to create.
        config_dir: for a single file: a diffusers folder whose configurations
            (and tokenizer) describe it; default: read from the shapes.
        tokenizer_dir: for a single file: the CLIP tokenizer's folder.
        image_size: pixel size to generate at; default the UNet's sample size
            times the autoencoder's downscale (512 for SD 1.x).
        precision: the run's precision; weights are stored in it.
        overwrite: replace an existing run directory.
    """
    if precision not in PRECISIONS:
        raise modiff.ModiffError(f"precision {precision!r} is unknown; use {', '.join(PRECISIONS)}")
    say = log or (lambda message: None)
    final = Path(run).expanduser().resolve()
    if final.exists() and not overwrite:
        raise modiff.RunError(f"{final} already exists; choose another RUN or pass --overwrite")
    modiff.RunDir(final).refuse_foreign()  # --overwrite replaces a modiff run, never a folder of other files
    src = read_source(
        Path(source).expanduser(),
        PRECISIONS[precision],
        config_dir=Path(config_dir).expanduser() if config_dir else None,
        tokenizer_dir=Path(tokenizer_dir).expanduser() if tokenizer_dir else None,
        image_size=image_size,
    )
    tmp = final.with_name(f".{final.name}.import-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    staging = modiff.RunDir(tmp)
    try:
        # The text encoder's config and tokenizer: the `pretrained` folder its settings name (outside the
        # checkpoints, so the path stays valid), and a copy in the checkpoint as the component's assets.
        text_folder = tmp / IMPORTED_TEXT
        write_text_assets(src, text_folder)
        staged = resolve(settings_table(src, final, text_folder, precision=precision, image_size=image_size))
        components = _meta_components(staged)
        parameters: dict[str, int] = {}
        with modiff.CheckpointWriter(tmp) as writer:
            for role, module in components.modules():
                name = next((p for p, r in ROLES.items() if r == role), None)
                part = src.parts[name] if name is not None else None
                expected = module.state_dict()
                extra = _encoder_statistics(src, expected) if role == "encoder" else {}
                say(f"writing {role} ({type(module).__name__})")
                tensors = component_tensors(role, expected, part, extra, src.described_by(name) if name else "")
                resolved = staged.components[role]
                assets = _CopiedAssets(text_folder) if role == "text_embedder" else None
                writer.save_component(
                    role, tensors, modiff.component_metadata(role, resolved.registration, resolved.params), assets
                )
                parameters[role] = sum(t.numel() for t in tensors.values())
                del tensors
            final_text = final / IMPORTED_TEXT
            settings = resolve(settings_table(src, final, final_text, precision=precision, image_size=image_size))
            modiff.atomic_write_text(staging.settings, settings.to_toml())
            writer.commit(
                {"stages_done": ["encoder", "text_embedder", "denoiser"], "stage": None, "step": 0,
                 "imported_from": str(src.path)}
            )
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportResult(final, src.notes, parameters)


def _encoder_statistics(src: Source, expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SD's latent scaling as the kl-autoencoder's (global) normalisation buffers."""
    _, scale = configs.vae_table(src.vae_config)
    channels = int(expected["latent_norm.scale"].shape[0])
    return {
        "latent_norm.scale": torch.full((channels,), scale, dtype=torch.float32),
        "latent_norm.shift": torch.zeros(channels, dtype=torch.float32),
        "latent_norm.fitted": torch.tensor(True),
    }
