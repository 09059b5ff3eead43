"""modiff against diffusers: UNet forward, UNet training step and full text-to-image
generation, on identical configurations and identical weights, in one process.

For each configuration (``demo``: the demo's model in Stable Diffusion's
layout; ``sd1-miniature``: SD 1.x's shapes in miniature; see
``_common.SHAPES``) the script

1. builds a diffusers ``StableDiffusionPipeline`` with random, perturbed
   weights, offline, writes it with ``save_pretrained`` and imports it with
   modiff-sd's ``import_sd``, then loads the run with ``Pipeline.load``: both
   sides hold the same weights;
2. UNet rows: the UNet alone, as ``bench_unet.py`` measures it (median
   forward and forward + backward + AdamW time, peak memory of each, FLOPs of
   a train step), at the configuration's training batch;
3. generation rows: prompt -> text embedding (prompt and empty prompt) ->
   ``--steps`` DDIM steps with classifier-free guidance ``--guidance`` ->
   decode, at each ``--batch``. Both sides start from the same initial
   latents (modiff's per-sample noise, handed to diffusers as ``latents``);
   the images are compared first (max |difference| in [0, 1]) and the script
   stops if they disagree. The first call of each side warms up; then the
   two sides take turns ``--repeats`` times and the median is reported,
   with the peak memory of one more call of each;
4. utilisation: the train step's FLOPs (``torch.utils.flop_counter``:
   matrix products, convolutions, attention; forward and backward) divided
   by its median time, against the fp32 peak measured in the same process
   with the same thread count: the larger of a 2048 x 2048 ``torch.mm`` and
   a large 3x3 convolution (on CPU these run in different libraries, MKL and
   oneDNN, which can differ by 2x; see ``_common.conv_peak``). bf16
   ``torch.mm`` is printed too.

Ratios are modiff / diffusers (below 1: modiff is faster or smaller). The
target column is the issue's: generation at most 0.8, training step at most
1.0, peak memory at most 1.0. The table is markdown, ready for
``docs/benchmarks.md``.

    python benchmarks/bench_generation.py                       # both configurations, one thread
    python benchmarks/bench_generation.py --config demo --repeats 20
    python benchmarks/bench_generation.py --channels-last      # both sides in channels_last
    python benchmarks/bench_generation.py --modiff-set run.compile=true   # a modiff fast path (no longer identical)
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import (
    MIB,
    SHAPES,
    SDShape,
    alternate,
    machine,
    markdown_table,
    dense_peaks,
    median,
    parse_args,
    peak_bytes,
    prompts,
    quiet_libraries,
)

quiet_libraries()

import diffusers  # noqa: E402  (reference only: modiff never imports it)
from bench_unet import Case, bench_case  # noqa: E402

import modiff  # noqa: E402
from modiff.pipeline import Pipeline  # noqa: E402
from modiff_sd.importer import import_sd  # noqa: E402

#: Largest |difference| of the [0, 1] images that still counts as the same image.
IMAGE_TOLERANCE = 1e-3
TARGETS = {"generation": 0.8, "train": 1.0, "peak": 1.0}


def unet_case(shape: SDShape) -> Case:
    return Case(shape.name, shape.unet_config(), batch=shape.train_batch, size=shape.latent_size, tokens=shape.tokens)


class Sides:
    """The same SD pipeline in diffusers and in modiff."""

    def __init__(self, shape: SDShape, folder: Path, device: torch.device, channels_last: bool, sets: list[str]):
        self.shape, self.device = shape, device
        self.reference = make_reference(shape, folder, device, channels_last)
        run = folder / "run"
        import_sd(folder / "diffusers", run)
        if channels_last:
            sets = ["run.channels_last=true", *sets]
        self.ours = Pipeline.load(run, device=device, sets=sets)

    def calls(self, n: int, steps: int, guidance: float) -> dict[str, Callable[[], torch.Tensor]]:
        """``{side: generate}`` for ``n`` prompts; each returns [0, 1] images on the CPU."""
        ps = prompts(n)
        latent = self.shape.latent_size
        noise = modiff.randn((n, 4, latent, latent), modiff.generators(range(n)), device=self.device)

        def ours() -> torch.Tensor:
            images = self.ours.generate_tensor(ps, seed=0, steps=steps, guidance=guidance)
            return (images / 2 + 0.5).clamp(0, 1)

        def reference() -> torch.Tensor:
            out = self.reference(
                ps, latents=noise, num_inference_steps=steps, guidance_scale=guidance, output_type="pt"
            )
            return out.images.float().cpu()

        return {"modiff": ours, "diffusers": reference}


def make_reference(shape: SDShape, folder: Path, device: torch.device, channels_last: bool) -> Any:
    from _common import make_sd_pipeline

    pipe = make_sd_pipeline(shape)
    pipe.save_pretrained(str(folder / "diffusers"))
    pipe.to(device)
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    return pipe


def bench_generation(sides: Sides, n: int, steps: int, guidance: float, repeats: int) -> dict[str, tuple[float, float]]:
    calls = sides.calls(n, steps, guidance)
    images = {k: fn() for k, fn in calls.items()}  # also the warm-up
    diff = float((images["modiff"] - images["diffusers"]).abs().max())
    if diff > IMAGE_TOLERANCE:
        raise SystemExit(
            f"{sides.shape.name}, batch {n}: images differ by {diff:.2e} (> {IMAGE_TOLERANCE}); "
            "the comparison would be meaningless"
        )
    times = alternate(calls, repeats)
    return {
        "s": (median(times["modiff"]), median(times["diffusers"])),
        "peak MiB": (peak_bytes(calls["modiff"]) / MIB, peak_bytes(calls["diffusers"]) / MIB),
        "max |diff|": (diff, 0.0),
    }


def profile_generation(sides: Sides, n: int, steps: int, guidance: float) -> None:
    """Where each side's generation time goes: the operators by self CPU time,
    and the share of the dense kernels (convolution, matrix multiply,
    attention) against everything else (the framework around them)."""
    from torch.profiler import ProfilerActivity, profile

    dense = ("conv", "mm", "addmm", "bmm", "matmul", "linear", "attention", "baddbmm")
    for side, fn in sides.calls(n, steps, guidance).items():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        averages = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in averages)
        in_dense = sum(e.self_cpu_time_total for e in averages if any(k in e.key.lower() for k in dense))
        print(f"\n[{sides.shape.name}] {side}, batch {n}: {total / 1e6:.2f} s of operator time, "
              f"{100 * in_dense / max(total, 1):.0f} % in convolution, matrix multiply and attention kernels")
        print(averages.table(sort_by="self_cpu_time_total", row_limit=10))


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) < 0.01:
        return f"{value:.1e}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return ""
    return f"≤ {target:g}: {'met' if ratio <= target else 'missed'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=list(SHAPES), action="append", help="configurations (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (median; default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 keeps torch's)")
    parser.add_argument("--batch", type=int, action="append", help="generation batch sizes (default: 1 and 8)")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--channels-last", action="store_true", help="both UNets in channels_last")
    parser.add_argument(
        "--modiff-set", action="append", default=[], metavar="TABLE.KEY=VALUE",
        help="a modiff setting for the generation rows only, e.g. run.compile=true (the sides are then "
        "no longer configured identically: say so next to the numbers)",
    )
    parser.add_argument("--skip-unet", action="store_true", help="only the generation rows")
    parser.add_argument("--skip-generation", action="store_true", help="only the UNet rows")
    parser.add_argument("--profile", action="store_true", help="also print where each side's generation time goes")
    args = parse_args(parser)
    device = torch.device(args.device)
    shapes = [SHAPES[n] for n in (args.config or list(SHAPES))]
    batches = args.batch or [1, 8]

    print(f"machine: {machine()}, diffusers {diffusers.__version__}, device {device}")
    print(
        f"repeats {args.repeats}, steps {args.steps}, guidance {args.guidance}, channels_last {args.channels_last}"
        + (f", modiff settings {args.modiff_set}" if args.modiff_set else ""),
        flush=True,
    )
    peaks = dense_peaks(args.device)
    peak_fp32 = max(peaks["mm fp32"], peaks["conv fp32"])
    rows: list[list[str]] = []
    notes: list[str] = []

    def row(config: str, measure: str, pair: tuple[float, float], target: float | None = None) -> None:
        ours, ref = pair
        ratio = ours / ref if ref else float("nan")
        rows.append([config, measure, fmt(ours), fmt(ref), f"{ratio:.2f}", verdict(ratio, target)])

    for shape in shapes:
        if not args.skip_unet:
            case = unet_case(shape)
            print(f"[{shape.name}] UNet, batch {case.batch}, 4x{case.size}x{case.size}", flush=True)
            r = bench_case(case, args.repeats, device, args.channels_last, flops=True)
            what = f"UNet, batch {case.batch}"
            row(shape.name, f"{what}: forward ms", r["forward ms"])
            row(shape.name, f"{what}: train step ms", r["train ms"], TARGETS["train"])
            row(shape.name, f"{what}: forward peak MiB", r["forward peak MiB"], TARGETS["peak"])
            row(shape.name, f"{what}: train step peak MiB", r["train peak MiB"], TARGETS["peak"])
            gflop = r["train GFLOP"]
            achieved = tuple(g / (ms / 1000) for g, ms in zip(gflop, r["train ms"]))
            row(shape.name, f"{what}: train step GFLOP", gflop)
            row(shape.name, f"{what}: train step GFLOP/s", achieved)  # type: ignore[arg-type]
            share = tuple(100 * a * 1e9 / peak_fp32 for a in achieved)
            row(shape.name, f"{what}: % of fp32 peak", share)  # type: ignore[arg-type]
            notes.append(f"{shape.name} UNet outputs agree to {r['max |diff|'][0]:.1e}")
        if args.skip_generation:
            continue
        with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
            print(f"[{shape.name}] building and importing the pipeline ({shape.image_size} px)", flush=True)
            sides = Sides(shape, Path(tmp), device, args.channels_last, args.modiff_set)
            for n in batches:
                print(f"[{shape.name}] generation, batch {n}", flush=True)
                g = bench_generation(sides, n, args.steps, args.guidance, args.repeats)
                what = f"generation, batch {n}"
                row(shape.name, f"{what}: s", g["s"], TARGETS["generation"])
                row(shape.name, f"{what}: peak MiB", g["peak MiB"], TARGETS["peak"])
                notes.append(f"{shape.name} batch {n} images agree to {g['max |diff|'][0]:.1e}")
                if args.profile:
                    profile_generation(sides, n, args.steps, args.guidance)

    print()
    print(markdown_table(["config", "measure", "modiff", "diffusers", "modiff/diffusers", "target"], rows))
    print()
    print(
        "measured peaks, same process and threads: "
        f"torch.mm fp32 2048^2 {peaks['mm fp32'] / 1e9:.0f} GFLOP/s, "
        f"3x3 conv fp32 (8x512x16x16) {peaks['conv fp32'] / 1e9:.0f} GFLOP/s, "
        f"torch.mm bf16 2048^2 {peaks['mm bf16'] / 1e9:.0f} GFLOP/s; "
        f"'% of fp32 peak' is against the larger fp32 one ({peak_fp32 / 1e9:.0f} GFLOP/s)"
    )
    for shape in shapes:
        print(
            f"{shape.name}: {shape.image_size} px, f = {shape.downscale} autoencoder {list(shape.vae_channels)}, "
            f"latents 4x{shape.latent_size}x{shape.latent_size}, UNet {list(shape.unet_channels)} "
            f"(attention {[i for i, a in enumerate(shape.unet_attention) if a]}), text {shape.text_width} wide, "
            f"{shape.tokens} tokens"
        )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
