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
    python benchmarks/bench_generation.py --device cuda --config sd15 --dtype fp16 --skip-unet --json out.json

Half precision (``--dtype fp16`` or ``bf16``, generation rows only) is each
library's own way: diffusers' modules in that dtype (``torch_dtype``, what
its documentation recommends), modiff's ``run.precision`` (autocast over
fp32 weights). The two sides then round differently, and their images can
drift apart over the steps: the image check is recorded against a looser
tolerance instead of stopping the script (fp32 still stops it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from _common import (
    DTYPES,
    MIB,
    SHAPES,
    SDShape,
    alternate,
    dense_peaks,
    machine,
    make_sd_pipeline,
    markdown_table,
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

#: Largest |difference| of the [0, 1] images that still counts as the same image, per ``--dtype``.
IMAGE_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "bf16": 1.5e-1}
TARGETS = {"generation": 0.8, "train": 1.0, "peak": 1.0}


def unet_case(shape: SDShape) -> Case:
    return Case(shape.name, shape.unet_config(), batch=shape.train_batch, size=shape.latent_size, tokens=shape.tokens)


class Sides:
    """The same SD pipeline in diffusers and in modiff."""

    def __init__(
        self, shape: SDShape, folder: Path, device: torch.device, channels_last: bool, sets: list[str],
        dtype: str = "fp32",
    ):
        self.shape, self.device, self.dtype = shape, device, DTYPES[dtype]
        self.reference = make_reference(shape, folder, device, channels_last, self.dtype)
        run = folder / "run"
        import_sd(folder / "diffusers", run)
        if channels_last:
            sets = ["run.channels_last=true", *sets]
        if dtype != "fp32":
            sets = [f'run.precision="{dtype}"', *sets]
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
                ps, latents=noise.to(self.dtype), num_inference_steps=steps, guidance_scale=guidance, output_type="pt"
            )
            return out.images.float().cpu()

        return {"modiff": ours, "diffusers": reference}


def make_reference(
    shape: SDShape, folder: Path, device: torch.device, channels_last: bool, dtype: torch.dtype = torch.float32
) -> Any:
    """The diffusers pipeline (saved in fp32 for modiff's import, then moved to ``device`` and ``dtype``)."""
    pipe = make_sd_pipeline(shape, device=device if device.type == "cuda" else "cpu")
    pipe.save_pretrained(str(folder / "diffusers"))
    pipe.to(device, dtype)
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    return pipe


def bench_generation(
    sides: Sides, n: int, steps: int, guidance: float, repeats: int, tolerance: float
) -> dict[str, tuple[float, float]]:
    calls = sides.calls(n, steps, guidance)
    images = {k: fn() for k, fn in calls.items()}  # also the warm-up
    if not all(bool(torch.isfinite(v).all()) for v in images.values()):
        raise SystemExit(f"{sides.shape.name}, batch {n}: an image is not finite; the comparison would be meaningless")
    diff = float((images["modiff"] - images["diffusers"]).abs().max())
    if diff > tolerance:
        message = f"{sides.shape.name}, batch {n}: images differ by {diff:.2e} (> {tolerance})"
        if sides.dtype == torch.float32:
            raise SystemExit(f"{message}; the comparison would be meaningless")
        print(f"warning: {message}; in half precision the two sides round differently", flush=True)
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
    parser.add_argument(
        "--dtype", choices=list(DTYPES), default="fp32",
        help="generation precision: diffusers' modules in this dtype, modiff's run.precision (default fp32)",
    )
    parser.add_argument("--size", type=int, help="image size instead of the configuration's (a multiple of its f)")
    parser.add_argument("--no-tf32", action="store_true", help="CUDA: no TF32 in matrix products and convolutions")
    parser.add_argument(
        "--image-tolerance", type=float,
        help=f"largest |difference| of the [0, 1] images (default per dtype: {IMAGE_TOLERANCE})",
    )
    parser.add_argument("--json", type=Path, help="also write the rows, notes and settings to this JSON file")
    args = parse_args(parser)
    device = torch.device(args.device)
    shapes = [SHAPES[n] for n in (args.config or ["demo", "sd1-miniature"])]
    if args.size:
        shapes = [dataclasses.replace(s, image_size=args.size) for s in shapes]
    batches = args.batch or [1, 8]
    tolerance = args.image_tolerance if args.image_tolerance is not None else IMAGE_TOLERANCE[args.dtype]
    if args.no_tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    print(f"machine: {machine()}, diffusers {diffusers.__version__}, device {device}")
    print(
        f"repeats {args.repeats}, steps {args.steps}, guidance {args.guidance}, channels_last {args.channels_last}, "
        f"dtype {args.dtype}, TF32 {'off' if args.no_tf32 or device.type != 'cuda' else 'torch default'}"
        + (f", modiff settings {args.modiff_set}" if args.modiff_set else ""),
        flush=True,
    )
    peaks = dense_peaks(args.device)
    peak_fp32 = max(peaks["mm fp32"], peaks["conv fp32"])
    rows: list[list[str]] = []
    notes: list[str] = []
    images: list[dict[str, Any]] = []

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
            sides = Sides(shape, Path(tmp), device, args.channels_last, args.modiff_set, args.dtype)
            for n in batches:
                print(f"[{shape.name}] generation, batch {n}", flush=True)
                g = bench_generation(sides, n, args.steps, args.guidance, args.repeats, tolerance)
                what = f"generation, batch {n}"
                row(shape.name, f"{what}: s", g["s"], TARGETS["generation"])
                row(shape.name, f"{what}: peak MiB", g["peak MiB"], TARGETS["peak"])
                diff = g["max |diff|"][0]
                images.append({"config": shape.name, "batch": n, "max_abs_diff": diff, "tolerance": tolerance,
                               "agree": diff <= tolerance})
                notes.append(f"{shape.name} batch {n} images agree to {diff:.1e}")
                if args.profile:
                    profile_generation(sides, n, args.steps, args.guidance)
            del sides
            if device.type == "cuda":
                torch.cuda.empty_cache()

    header = ["config", "measure", "modiff", "diffusers", "modiff/diffusers", "target"]
    table = markdown_table(header, rows)
    print()
    print(table)
    print()
    print(
        "measured peaks, same process and threads: "
        f"torch.mm fp32 2048^2 {peaks['mm fp32'] / 1e9:.0f} GFLOP/s, "
        f"3x3 conv fp32 (8x512x16x16) {peaks['conv fp32'] / 1e9:.0f} GFLOP/s, "
        f"torch.mm bf16 {'2048' if device.type == 'cuda' else '512'}^2 {peaks['mm bf16'] / 1e9:.0f} GFLOP/s; "
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
    if args.json:
        record = {
            "machine": machine(), "device": str(device), "diffusers": diffusers.__version__, "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "settings": {"configs": [dataclasses.asdict(s) for s in shapes], "batches": batches, "steps": args.steps,
                         "guidance": args.guidance, "repeats": args.repeats, "dtype": args.dtype,
                         "channels_last": args.channels_last, "modiff_set": args.modiff_set,
                         "tf32": not args.no_tf32 and device.type == "cuda", "threads": torch.get_num_threads()},
            "rows": [dict(zip(header, r)) for r in rows],
            "images": images,
            "peaks_flops": peaks,
            "notes": notes,
            "markdown": table,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
