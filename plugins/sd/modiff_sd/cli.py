"""The ``import-sd`` and ``export-diffusers`` subcommands (argparse, added through ``register_commands``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "import-sd",
        help="turn Stable Diffusion 1.x weights (diffusers folder or single file) into a modiff run",
        description="Import Stable Diffusion 1.x weights into a run directory that generate, evaluate and ablate use. "
        "SOURCE is a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or an "
        "original single-file checkpoint (.safetensors; .ckpt only through weights-only loading).",
    )
    p.add_argument("source", metavar="SOURCE", type=Path, help="diffusers folder or single-file checkpoint")
    p.add_argument("run", metavar="RUN", type=Path, help="run directory to create")
    p.add_argument("--config", type=Path, default=None, metavar="FOLDER",
                   help="single file: a diffusers folder whose config files (and tokenizer/) describe it")
    p.add_argument("--tokenizer", type=Path, default=None, metavar="FOLDER",
                   help="single file: the CLIP tokenizer (vocab.json and merges.txt, or tokenizer.json)")
    p.add_argument("--image-size", type=int, default=None,
                   help="pixel size to generate at (default: the model's, 512 for SD 1.x)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="the run's precision; weights are stored in it (default fp32)")
    p.add_argument("--overwrite", action="store_true", help="replace RUN if it exists")
    p.set_defaults(func=run_import)

    e = sub.add_parser(
        "export-diffusers",
        help="write a run with SD-compatible components as a diffusers folder",
        description="Write RUN (unet, kl-autoencoder with one global latent scale, sd-clip, sd-cross-attention, a "
        "sampler with a diffusers equivalent) as a diffusers StableDiffusionPipeline folder.",
    )
    e.add_argument("run", metavar="RUN", type=Path, help="run directory")
    e.add_argument("out", metavar="DIR", type=Path, help="folder to write")
    e.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    e.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    from .importer import import_sd

    result = import_sd(
        args.source,
        args.run,
        config_dir=args.config,
        tokenizer_dir=args.tokenizer,
        image_size=args.image_size,
        precision=args.precision,
        overwrite=args.overwrite,
        log=lambda m: print(m, flush=True),
    )
    for note in result.notes:
        print(f"note: {note}")
    total = sum(result.parameters.values())
    print(f"imported {args.source} into {result.run} ({total / 1e6:.1f}M parameters)")
    print(f'try: modiff generate {result.run} "a photograph of an astronaut riding a horse"')
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .exporter import export_diffusers

    result = export_diffusers(args.run, args.out, overwrite=args.overwrite)
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {result.path}")
    return 0
