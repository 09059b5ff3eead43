"""Train ``kl-autoencoder`` on shapes-world images and measure reconstruction.

For each image size (default 32 and 64) this trains a fresh autoencoder for a
fixed number of AdamW steps on ``training_loss`` (a minimal loop written here:
the benchmark measures the component, not the core's loop), estimates the
latent statistics with ``finish_training``, and reports on held-out images
(another seed of the world, never trained on):

* PSNR of ``decode(encode(x))`` (clamped to [-1, 1] as a saved image would
  be; pixels on a 0..1 scale), and its ratio to the reference;
* the reference, measured in the same run: the same spatial compression
  without learning (average-pool by f, bilinear upsample back), i.e. what a
  latent of ``H/f x W/f`` pixels gives for free;
* colour accuracy: for each object colour, is the reconstruction's mean
  colour over those pixels nearest the right palette colour (as the
  prompt-accuracy evaluator judges generated images), and the mean |RGB|
  error (0..255), because colours are what the text-to-image trial lost
  (FINDINGS.md);
* the raw latent channels' standard deviations (before normalisation) and
  the normalised ones on held-out data (should be ~1 each);
* training time, steps per second, and encode+decode time per image.

Run: ``python benchmarks/bench_autoencoder.py`` (defaults: 1000 steps, batch 32,
lr 2e-3 with 20 warm-up steps and cosine decay, gradient clipping at 1, sizes
32 64; the step budget of ``modiff demo``'s encoder stage). ``--set key=value`` overrides kl-autoencoder settings
(values are JSON, e.g. ``--set channels=[16,32,32] --set kl_weight=1e-3``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from modiff.protocols import Batch
from modiff.testing import build_one

PALETTE = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 60, 220),
    "cyan": (40, 210, 220),
}


# ---------------------------------------------------------------- images


def shapes_source(size: int, seed: int) -> tuple[str, Callable[[int], tuple[torch.Tensor, torch.Tensor]]]:
    """``(name, get)``: ``get(i)`` -> (image [3, H, W] in [-1, 1], object mask [H, W] bool).

    Uses the ``shapes`` dataset plugin when it is installed, else a small
    renderer of the same world (SHAPES.md) written here.
    """
    try:
        ds = build_one("data", "shapes", {"image_size": size, "seed": seed, "size": 1_000_000, "max_objects": 2})
    except Exception as exc:  # not written yet, or broken: fall back, and say so
        print(f"(shapes plugin unavailable: {type(exc).__name__}: {str(exc)[:100]}; using the built-in renderer)")
        return "built-in renderer", lambda i: render(size, seed, i)

    def get(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        ex = ds[i]
        mask = ex.mask > 0 if ex.mask is not None else (ex.image > -0.9).any(dim=0)
        return ex.image, mask

    return "shapes plugin", get


def render(size: int, seed: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image of the shapes world: 1-2 filled shapes, palette colours, 3x3 cells."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    image = torch.zeros(3, size, size)
    objects = torch.zeros(size, size, dtype=torch.bool)
    n = 1 + int(torch.randint(2, (1,), generator=g))
    cells = torch.randperm(9, generator=g)[:n].tolist()
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    cell = size / 3
    for c in cells:
        colour = torch.tensor(list(PALETTE.values())[int(torch.randint(6, (1,), generator=g))], dtype=torch.float32)
        side = round((0.22 if torch.rand(1, generator=g) < 0.5 else 0.30) * size)
        jitter = (torch.rand(2, generator=g) * 2 - 1) * cell / 8
        cy, cx = (c // 3 + 0.5) * cell + float(jitter[0]), (c % 3 + 0.5) * cell + float(jitter[1])
        kind = int(torch.randint(3, (1,), generator=g))
        dy, dx = yy - cy, xx - cx
        if kind == 0:  # circle
            inside = dy.square() + dx.square() <= (side / 2) ** 2
        elif kind == 1:  # square
            inside = (dy.abs() <= side / 2) & (dx.abs() <= side / 2)
        else:  # triangle, apex up
            t = (dy + side / 2) / side  # 0 at the apex row, 1 at the base
            inside = (t >= 0) & (t <= 1) & (dx.abs() <= t * side / 2)
        image[:, inside] = colour.view(3, 1)
        objects |= inside
    return image / 127.5 - 1.0, objects


Getter = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def load(get: Getter, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    items = [get(i) for i in indices]
    return torch.stack([x for x, _ in items]), torch.stack([m for _, m in items])


# --------------------------------------------------------------- metrics


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB on a 0..1 pixel scale, over the whole set."""
    mse = ((reconstruction.clamp(-1, 1) - target) / 2).square().mean()
    return float(10 * torch.log10(1.0 / mse))


def colour_scores(
    reconstruction: torch.Tensor, target: torch.Tensor, masks: torch.Tensor
) -> tuple[float, float]:
    """(accuracy, mean |RGB| error 0..255) of object colours.

    For every colour present in an image, the reconstruction's mean colour
    over the pixels that truly have it is matched to the nearest palette
    colour, as the prompt-accuracy evaluator does for generated images;
    accuracy is the fraction matched to the right one.
    """
    palette = torch.tensor(list(PALETTE.values()), dtype=torch.float32) / 127.5 - 1.0
    right, errors = [], []
    for rec, tgt, m in zip(reconstruction.clamp(-1, 1), target, masks):
        pixels, truth = rec[:, m].T, tgt[:, m].T  # [N, 3]
        for colour in truth.unique(dim=0):
            sel = (truth == colour).all(dim=1)
            mean = pixels[sel].mean(0)
            nearest = (palette - mean).square().sum(1).argmin()
            right.append(float(nearest == (palette - colour).square().sum(1).argmin()))
            errors.append(float((mean - colour).abs().mean() * 127.5))
    if not right:
        return math.nan, math.nan
    return sum(right) / len(right), sum(errors) / len(errors)


def pool_baseline(images: torch.Tensor, f: int) -> torch.Tensor:
    """The same spatial compression without learning."""
    small = F.avg_pool2d(images, f)
    return F.interpolate(small, scale_factor=f, mode="bilinear", align_corners=False)


# ----------------------------------------------------------------- run


def run_size(size: int, args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    source, get = shapes_source(size, seed=args.seed)
    _, held_get = shapes_source(size, seed=args.seed + 1)
    held, held_masks = load(held_get, list(range(args.held)))

    encoder = build_one("encoder", "kl-autoencoder", overrides)
    f = encoder.downscale
    params = sum(p.numel() for p in encoder.parameters())
    opt = torch.optim.AdamW(encoder.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
    )
    g = torch.Generator().manual_seed(args.seed)
    encoder.train()
    start = time.perf_counter()
    losses = []
    for step in range(args.steps):
        idx = torch.randint(0, 1_000_000, (args.batch,), generator=g).tolist()
        images, _ = load(get, idx)
        loss = encoder.training_loss(Batch(images, [""] * len(idx)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if args.verbose and (step + 1) % max(1, args.steps // 10) == 0:
            print(f"  {size}px step {step + 1}: loss {sum(losses[-20:]) / len(losses[-20:]):.4f}", flush=True)
    train_time = time.perf_counter() - start

    # Statistics from 8 batches at the far end of the index range, as the core's finish step reads a few batches.
    stats_batches = []
    for k in range(8):
        images, _ = load(get, list(range(10**6 - (k + 1) * args.batch, 10**6 - k * args.batch)))
        stats_batches.append(Batch(images, [""] * args.batch))
    encoder.finish_training(stats_batches)
    encoder.eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        z = encoder.encode(held)
        rec = encoder.decode(z)
        codec_time = (time.perf_counter() - t0) / len(held)
        raw = encoder.posterior(held).mean
    flat = lambda t: t.transpose(0, 1).reshape(t.shape[1], -1)  # noqa: E731
    baseline = pool_baseline(held, f)
    return {
        "size": size,
        "mode": encoder.settings.latent_normalization,
        "source": source,
        "f": f,
        "latent": tuple(z.shape[1:]),
        "params": params,
        "steps": args.steps,
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "psnr": psnr(rec, held),
        "psnr_ref": psnr(baseline, held),
        "colour": colour_scores(rec, held, held_masks),
        "colour_ref": colour_scores(baseline, held, held_masks),
        "raw_std": [round(float(v), 3) for v in flat(raw).std(1)],
        "norm_std": [round(float(v), 3) for v in flat(z).std(1)],
        "train_s": train_time,
        "steps_per_s": args.steps / train_time,
        "codec_ms": codec_time * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--held", type=int, default=256, help="held-out images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="kl-autoencoder setting")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {"downscale": 4}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if "channels" in overrides and "downscale" not in [s.partition("=")[0] for s in args.set]:
        overrides.pop("downscale")
    print(f"kl-autoencoder {overrides}; {args.steps} steps, batch {args.batch}, lr {args.lr}, "
          f"{torch.get_num_threads()} threads, {args.held} held-out images")
    header = (
        f"{'size':>5} {'latent':>10} {'PSNR dB':>8} {'ref dB':>7} {'ratio':>6} {'colour':>7} {'ref':>6} "
        f"{'RGB err':>7} {'ref':>6} "
        f"{'train s':>8} {'step/s':>7} {'codec ms/img':>12} {'loss':>7}"
    )
    rows = []
    for size in args.sizes:
        rows.append(run_size(size, args, overrides))
        if args.verbose:
            print(row_text(rows[-1]), flush=True)
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        print(row_text(r))
    print()
    for r in rows:
        print(
            f"{r['size']}px ({r['source']}, {r['params']:,} parameters): raw latent channel std {r['raw_std']}, "
            f"after {r['mode']} normalisation, held-out data {r['norm_std']}"
        )
    print(
        "ref = average-pool by f + bilinear upsample (same spatial compression, nothing learned); "
        "ratio = PSNR / ref PSNR; colour = fraction of object colours whose reconstruction is nearest the right "
        "palette colour; RGB err = mean |RGB| error (0..255) of the objects' mean colours."
    )


def row_text(r: dict[str, Any]) -> str:
    latent = "x".join(str(v) for v in r["latent"])
    return (
        f"{r['size']:>5} {latent:>10} {r['psnr']:>8.2f} {r['psnr_ref']:>7.2f} {r['psnr'] / r['psnr_ref']:>6.2f} "
        f"{r['colour'][0]:>7.2f} {r['colour_ref'][0]:>6.2f} {r['colour'][1]:>7.1f} {r['colour_ref'][1]:>6.1f} "
        f"{r['train_s']:>8.1f} {r['steps_per_s']:>7.2f} "
        f"{r['codec_ms']:>12.2f} {r['final_loss']:>7.4f}"
    )


if __name__ == "__main__":
    main()
