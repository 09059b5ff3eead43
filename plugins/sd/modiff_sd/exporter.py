"""``modiff export-diffusers``: a run with SD-compatible components as a diffusers folder.

The folder is what ``StableDiffusionPipeline.save_pretrained`` writes:
``model_index.json``, and ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/`` with their configurations and safetensors
weights. Tensors are copied one component at a time, unchanged (names and
dtypes), so importing the export gives back the run's tensors bit for bit.

What must hold: the denoiser is ``unet`` with a denoising head and no
concatenated or vector conditioning; the encoder is ``kl-autoencoder`` with
one global latent scale and no shift (``AutoencoderKL`` has one
``scaling_factor``); the text embedder is ``sd-clip`` and the conditioner
``sd-cross-attention`` (so diffusers conditions exactly as the run does); the
sampler has a diffusers equivalent.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import modiff
from modiff_unet.diffusers_layout import to_diffusers_config

from . import configs
from .sources import SafetensorsFile
from .text import TOKENIZER_FILES

#: diffusers version whose folder format this writes (it loads in later versions).
DIFFUSERS_FORMAT_VERSION = "0.30.0"
REQUIRED = {
    "denoiser": "unet",
    "encoder": "kl-autoencoder",
    "text_embedder": "sd-clip",
    "conditioner": "sd-cross-attention",
}


@dataclass
class ExportResult:
    path: Path
    notes: list[str] = field(default_factory=list)


def _check_components(resolved: modiff.ResolvedSettings, run: modiff.RunDir) -> None:
    problems = []
    for role, name in REQUIRED.items():
        comp = resolved.components.get(role)
        if comp is None or comp.name != name:
            problems.append(f"[{role}] is {comp.name if comp else 'missing'!r}, diffusers' pipeline needs {name!r}")
        elif not run.weights(role).is_file():
            problems.append(f"{run.weights(role)} is missing (the {role} is not trained or imported yet)")
    if resolved.run.task != "text-to-image":
        problems.append(f"[run] task is {resolved.run.task!r}; only text-to-image runs are StableDiffusionPipelines")
    denoiser = resolved.components.get("denoiser")
    if denoiser is not None and denoiser.params.model_dump().get("head") == "segment":
        problems.append("the UNet has a segmentation head")
    if problems:
        raise modiff.ModiffError(
            f"{run.path} cannot be written as a diffusers StableDiffusionPipeline: " + "; ".join(problems)
        )


def _image_size(resolved: modiff.ResolvedSettings) -> int:
    if resolved.run.image_size is not None:
        return int(resolved.run.image_size)
    data = resolved.components.get("data")
    size = data.params.model_dump().get("image_size") if data is not None else None
    if size is None:
        raise modiff.ModiffError("the run's image size is unknown: set [run] image_size")
    return int(size)


def _latent_scale(path: Path) -> float:
    f = SafetensorsFile(path)
    scale, shift = f.read("latent_norm.scale").float(), f.read("latent_norm.shift").float()
    if not bool(f.read("latent_norm.fitted")):
        raise modiff.ModiffError(f"{path}: the autoencoder's latent statistics were never estimated (train it first)")
    if not torch.allclose(scale, scale[:1].expand_as(scale), rtol=1e-6, atol=0) or bool(shift.abs().max() > 0):
        raise modiff.ModiffError(
            f"{path} normalises its latents per channel (scale {scale.tolist()}, shift {shift.tolist()}); diffusers' "
            "AutoencoderKL has one scaling_factor and no shift. Export a run trained with "
            'latent_normalization = "global"'
        )
    return float(scale[0])


def _copy_tensors(source: Path, target: Path, *, drop_prefix: str | None = None) -> None:
    """Copy a component's tensors unchanged (one component in memory at a time)."""
    f = SafetensorsFile(source)
    tensors = {k: f.read(k) for k in f.keys() if drop_prefix is None or not k.startswith(drop_prefix)}
    modiff.atomic_save_tensors(target, tensors, {"format": "pt"})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def model_index(scheduler_class: str) -> dict[str, Any]:
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": DIFFUSERS_FORMAT_VERSION,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler_class],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def export_diffusers(
    run: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool = False
) -> ExportResult:
    """Write ``run`` as a diffusers ``StableDiffusionPipeline`` folder at ``out``."""
    rd = modiff.RunDir.of(run)
    rd.require()
    resolved = modiff.load_settings_files([rd.settings], environ={})
    _check_components(resolved, rd)
    target = Path(out).expanduser().resolve()
    if target.exists() and not overwrite:
        raise modiff.RunError(f"{target} already exists; choose another DIR or pass --overwrite")
    ours = target.is_dir() and ((target / "model_index.json").is_file() or not any(target.iterdir()))
    if target.exists() and not ours:
        raise modiff.RunError(  # --overwrite replaces a diffusers folder, never a folder of other files
            f"{target} is not a diffusers folder (no model_index.json); nothing in it was touched: choose another DIR"
        )
    notes: list[str] = []
    params = {role: c.params.model_dump(mode="json") for role, c in resolved.components.items()}
    vae_file = SafetensorsFile(rd.weights("encoder"))
    vae = configs.vae_config_from_shapes(vae_file.keys(), vae_file.shape)
    vae["norm_num_groups"] = params["encoder"]["norm_num_groups"]
    f = 2 ** (len(vae["block_out_channels"]) - 1)
    size = _image_size(resolved)
    text_assets = rd.assets("text_embedder")
    text_config = json.loads((text_assets / "config.json").read_text(encoding="utf-8"))
    width = int(text_config["hidden_size"])
    unet = dict(params["denoiser"])
    unet.setdefault("cross_attention_dim", None)
    unet["cross_attention_dim"] = unet["cross_attention_dim"] or width
    if unet.get("heads") is None:
        dims = unet.get("head_dim") or 32
        dims = dims if isinstance(dims, list) else [dims] * len(unet["channels"])
        if any(c % d for c, d in zip(unet["channels"], dims)):
            raise modiff.ModiffError(
                "set [denoiser] heads explicitly: the default head count has no diffusers equivalent here"
            )
    sampler = resolved.components["scheduler"].name
    sched = params["scheduler"]
    if sched.get("eta", 0) and sampler == "ddim":
        notes.append(f"DDIM eta = {sched['eta']} is a call argument in diffusers (pipe(..., eta=...)), not a setting")
    if sampler == "lms" and sched.get("order", 4) != 4:
        notes.append(f"LMS order {sched['order']}: diffusers' pipeline always uses order 4")
    if sampler == "euler" and sched.get("s_churn", 0):
        notes.append("Euler's churn is a step argument in diffusers; its pipeline samples without churn")

    tmp = target.with_name(f".{target.name}.export-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        latent_size = size // f
        _write_json(tmp / "unet" / "config.json", {
            **to_diffusers_config(unet, in_channels=int(vae["latent_channels"]), sample_size=latent_size),
            "_diffusers_version": DIFFUSERS_FORMAT_VERSION,
        })
        _copy_tensors(rd.weights("denoiser"), tmp / "unet" / "diffusion_pytorch_model.safetensors")
        vae.update(scaling_factor=_latent_scale(rd.weights("encoder")), sample_size=size)
        _write_json(tmp / "vae" / "config.json", {
            "_class_name": "AutoencoderKL", **vae, "act_fn": "silu", "in_channels": 3, "out_channels": 3,
            "_diffusers_version": DIFFUSERS_FORMAT_VERSION,
        })
        vae_weights = tmp / "vae" / "diffusion_pytorch_model.safetensors"
        _copy_tensors(rd.weights("encoder"), vae_weights, drop_prefix="latent_norm.")
        _write_json(tmp / "text_encoder" / "config.json", {**text_config, "architectures": ["CLIPTextModel"]})
        _copy_tensors(rd.weights("text_embedder"), tmp / "text_encoder" / "model.safetensors")
        (tmp / "tokenizer").mkdir(parents=True)
        for name in TOKENIZER_FILES:
            if (text_assets / name).is_file():
                shutil.copyfile(text_assets / name, tmp / "tokenizer" / name)
        scheduler = configs.scheduler_config(sampler, sched)
        scheduler["_diffusers_version"] = DIFFUSERS_FORMAT_VERSION
        _write_json(tmp / "scheduler" / "scheduler_config.json", scheduler)
        _write_json(tmp / "model_index.json", model_index(scheduler["_class_name"]))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(target, notes)
