"""Latent against pixel space: the speed-up latent diffusion is about, measured.

The demo's settings (``core/modiff/configs/demo.toml``) at 32, 64 and 128
pixels, with three encoders and everything else equal, the UNet's widths
included (``[64, 128]``, one block per level, attention on the second level):

* ``identity``: pixel space, the denoiser works on 3 x N x N images;
* ``kl-autoencoder`` f = 4 (``channels = [16, 32, 32]``, the demo's): 4 x N/4 x N/4;
* ``kl-autoencoder`` f = 8 (``channels = [16, 32, 32, 32]``): 4 x N/8 x N/8.

Weights are the untrained ones (time does not depend on them). For each
size the three encoders take turns ``--repeats`` times per measurement and
the median is reported:

* train step (cached latents): one denoiser training step as modiff's
  trainer runs it (``modiff.training.DenoiserLoss``: conditioning with
  dropout, noise, timesteps, UNet forward and backward, AdamW on the
  denoiser and conditioner) at ``--train-batch``, with the batch's latents
  already cached, as the trainer caches them for a frozen, deterministic
  encoder;
* train step (encoding): the same, encoding the images every step (a
  trainable or sampling encoder, or a run without the cache);
* generation: ``--images`` images from their prompts, ``--steps`` DDIM steps
  with classifier-free guidance, decoded (``Pipeline.generate_tensor``).

Speed-ups are pixel time / latent time at the same image size.

    python benchmarks/bench_latent_vs_pixel.py                    # 32, 64, 128 px; one thread
    python benchmarks/bench_latent_vs_pixel.py --size 32 --size 64 --repeats 5
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import modiff
from _common import alternate, machine, markdown_table, median, parse_args
from modiff.assembly import build
from modiff.pipeline import Pipeline
from modiff.protocols import Batch
from modiff.settings import load
from modiff.training import DenoiserLoss, FrozenCache

DEMO = Path(modiff.__file__).parent / "configs" / "demo.toml"
ENCODERS: dict[str, dict[str, Any]] = {
    "pixel (identity)": {"plugin": "identity"},
    "latent f=4": {"plugin": "kl-autoencoder", "channels": [16, 32, 32]},
    "latent f=8": {"plugin": "kl-autoencoder", "channels": [16, 32, 32, 32]},
}
PROMPTS = [
    "a red circle in the top left",
    "a large blue square at the bottom",
    "a small green triangle in the center",
    "a yellow square on the right",
]


def settings(
    size: int, encoder: dict[str, Any], device: str = "cpu", sets: list[str] | None = None
) -> modiff.ResolvedSettings:
    """The demo's settings at ``size`` pixels with ``encoder``; no dataset (an
    image size instead) and no evaluator, which timing needs neither of."""
    with DEMO.open("rb") as fh:
        table = tomllib.load(fh)
    table.pop("data", None)
    table.pop("evaluator", None)
    table["run"]["image_size"] = size
    table["run"]["device"] = device
    table["encoder"] = dict(encoder)
    return load(base=table, sets=list(sets or []), environ={})


@dataclass
class Cell:
    """One (size, encoder): its pipeline and the closures that are timed."""

    size: int
    encoder: str
    latent_shape: tuple[int, ...]
    train_cached: Callable[[], None]
    train_encoding: Callable[[], None]
    generate: Callable[[], None]
    warm_generate: Callable[[], None]


def make_cell(
    size: int, name: str, train_batch: int, images: int, steps: int, guidance: float, device: str = "cpu",
    sets: list[str] | None = None,
) -> Cell:
    torch.manual_seed(0)
    resolved = settings(size, ENCODERS[name], device, sets)
    components = build(resolved, device=device)
    pipeline = Pipeline(components)
    c = components
    for m in (c.encoder, c.text_embedder):
        if isinstance(m, torch.nn.Module):
            m.eval().requires_grad_(False)
    modules = [m for m in (c.denoiser, c.conditioner) if isinstance(m, torch.nn.Module)]
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(1)
    batch = Batch(
        images=(torch.rand(train_batch, 3, size, size, generator=g) * 2 - 1).to(device),
        captions=[PROMPTS[i % len(PROMPTS)] for i in range(train_batch)],
    )
    indices = list(range(train_batch))
    cache = FrozenCache(c.dataset, encoder=c.encoder, embedder=c.text_embedder)
    text = cache.text if c.text_embedder is not None else None
    cached = DenoiserLoss(c, cache.latents, text, resolved.train.condition_dropout)
    encoding = DenoiserLoss(
        c, lambda images, idx, step: c.encoder.encode(images), text, resolved.train.condition_dropout
    )

    def step(loss_fn: DenoiserLoss) -> Callable[[], None]:
        def run() -> None:
            for m in modules:
                m.train()
            loss = loss_fn(batch, indices, torch.Generator().manual_seed(2))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return run

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(images)]

    def generate(steps: int = steps) -> None:
        for m in modules:
            m.eval()
        pipeline.generate_tensor(prompts, seed=0, steps=steps, guidance=guidance)

    latent = (c.context.latent_channels, c.context.latent_size, c.context.latent_size)
    return Cell(size, name, latent, step(cached), step(encoding), generate, lambda: generate(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, action="append", help="image sizes (default 32, 64, 128)")
    parser.add_argument("--encoder", choices=list(ENCODERS), action="append", help="encoders (default: all three)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (median; default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 keeps torch's)")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch (default 8)")
    parser.add_argument("--images", type=int, default=4, help="images per generation (default 4)")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    parser.add_argument("--guidance", type=float, default=3.0, help="guidance scale (default 3.0, the demo's)")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="TABLE.KEY=VALUE",
        help="change the demo's settings for every cell, e.g. --set denoiser.attention_levels=[1]",
    )
    args = parse_args(parser)
    sizes = args.size or [32, 64, 128]
    encoders = args.encoder or list(ENCODERS)
    print(f"machine: {machine()}, device {args.device}")
    print(
        f"repeats {args.repeats}, train batch {args.train_batch}, generation: {args.images} images, "
        f"{args.steps} DDIM steps, guidance {args.guidance}, decode included"
        + (f"; settings changed: {' '.join(args.sets)}" if args.sets else ""),
        flush=True,
    )
    rows: list[list[str]] = []
    for size in sizes:
        print(f"[{size} px] building", flush=True)
        cells = {
            name: make_cell(
                size, name, args.train_batch, args.images, args.steps, args.guidance, args.device, args.sets
            )
            for name in encoders
        }
        results: dict[str, dict[str, float]] = {name: {} for name in cells}
        for what in ("train_cached", "train_encoding", "generate"):
            fns = {name: getattr(cell, what) for name, cell in cells.items()}
            for cell in cells.values():  # warm up (and fill the latent cache); one sampler step is enough
                (cell.warm_generate if what == "generate" else getattr(cell, what))()
            print(f"[{size} px] timing {what}", flush=True)
            times = alternate(fns, args.repeats)
            for name in cells:
                results[name][what] = median(times[name])
        base = results.get("pixel (identity)")
        for name, cell in cells.items():
            r = results[name]

            def speedup(what: str, r: dict[str, float] = r, base: dict[str, float] | None = base) -> str:
                return f"{base[what] / r[what]:.1f}x" if base else "-"

            shape = "x".join(str(d) for d in cell.latent_shape)
            rows.append([
                f"{size}", name, shape, f"{1000 * r['train_cached']:.0f}", speedup("train_cached"),
                f"{1000 * r['train_encoding']:.0f}", speedup("train_encoding"), f"{r['generate']:.2f}",
                speedup("generate"),
            ])
    print()
    print(markdown_table(
        ["px", "space", "denoiser input", "train step ms (cached latents)", "speed-up", "train step ms (encoding)",
         "speed-up", f"generation s ({args.images} images)", "speed-up"],
        rows,
    ))
    print("\nspeed-up: pixel-space time / this row's time at the same image size")


if __name__ == "__main__":
    main()
