"""modiff's fast paths, one setting each, against modiff's plain path: time, agreement, memory.

Which of ``[run] channels_last``, ``[run] compile``, ``[run] precision =
"bf16"`` and ``[sample] batch_guidance`` help on this machine? For each
configuration of ``bench_generation.py`` (the same diffusers pipeline,
imported with ``import_sd``) the run is loaded once per variant, with the
same weights, and the script measures

* generation: prompt -> ``--steps`` DDIM steps with guidance 7.5 -> decode,
  at ``--batch`` (median of ``--repeats``, variants taking turns), its peak
  memory, and the largest difference of its [0, 1] images from the plain
  path's (what "the same result within tolerance" means for that variant);
* train step: the denoiser's forward + backward + AdamW under the variant's
  memory format, compilation and autocast, at the configuration's training
  batch.

``compile`` is timed after its first call, which compiles (that time is
printed apart). bf16 pays off only where the CPU or GPU has bf16 matrix
units (AVX512-BF16 or AMX on CPUs); elsewhere it is emulated and slower.

    python benchmarks/bench_fast_paths.py                      # both configurations, batch 8, one thread
    python benchmarks/bench_fast_paths.py --config demo --variant bf16 --variant channels_last
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_generation import make_reference

import modiff
from _common import MIB, SHAPES, SDShape, alternate, machine, markdown_table, median, parse_args, peak_bytes, prompts
from modiff.devices import autocast
from modiff.pipeline import Pipeline
from modiff.protocols import Conditioning
from modiff_sd.importer import import_sd

VARIANTS: dict[str, list[str]] = {
    "plain": [],
    "channels_last": ["run.channels_last=true"],
    "bf16": ['run.precision="bf16"'],
    "compile": ["run.compile=true"],
    "separate guidance": ["sample.batch_guidance=false"],
    "channels_last + bf16": ["run.channels_last=true", 'run.precision="bf16"'],
}


def generation(pipe: Pipeline, n: int, steps: int) -> Callable[[], torch.Tensor]:
    ps = prompts(n)

    def run() -> torch.Tensor:
        return (pipe.generate_tensor(ps, seed=0, steps=steps, guidance=7.5) / 2 + 0.5).clamp(0, 1)

    return run


def train_step(pipe: Pipeline, shape: SDShape) -> Callable[[], None]:
    """The denoiser's training step under the run's fast paths (autocast included)."""
    c = pipe.components
    denoiser = c.denoiser
    params = [p for p in denoiser.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-5)
    g = torch.Generator().manual_seed(1)
    b, size = shape.train_batch, shape.latent_size
    x = torch.randn(b, 4, size, size, generator=g).to(pipe.device)
    if c.settings.run.channels_last:
        x = x.to(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (b,), generator=g).float().to(pipe.device)
    context = torch.randn(b, shape.tokens, shape.text_width, generator=g).to(pipe.device)
    cond = Conditioning(context=context, context_mask=torch.ones(b, shape.tokens, dtype=torch.bool))
    target = torch.randn(x.shape, generator=g).to(pipe.device)
    precision = c.settings.run.precision

    def run() -> None:
        denoiser.train()
        with autocast(pipe.device, precision):
            loss = (denoiser(x, t, cond).float() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        denoiser.eval()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=list(SHAPES), action="append", help="configurations (default: all)")
    parser.add_argument("--variant", choices=list(VARIANTS), action="append", help="variants (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (median; default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 keeps torch's)")
    parser.add_argument("--batch", type=int, default=8, help="generation batch (default 8)")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    args = parse_args(parser)
    variants = ["plain", *[v for v in (args.variant or list(VARIANTS)) if v != "plain"]]
    print(f"machine: {machine()}, device {args.device}")
    print(f"repeats {args.repeats}, generation batch {args.batch}, {args.steps} DDIM steps, guidance 7.5", flush=True)
    rows: list[list[str]] = []
    compile_notes: list[str] = []
    for shape in [SHAPES[n] for n in (args.config or list(SHAPES))]:
        with tempfile.TemporaryDirectory(prefix="bench-fast-paths-") as tmp:
            print(f"[{shape.name}] building and importing", flush=True)
            make_reference(shape, Path(tmp), torch.device("cpu"), False)
            import_sd(Path(tmp) / "diffusers", Path(tmp) / "run")
            pipes = {v: Pipeline.load(Path(tmp) / "run", device=args.device, sets=VARIANTS[v]) for v in variants}
            gens = {v: generation(p, args.batch, args.steps) for v, p in pipes.items()}
            steps = {v: train_step(p, shape) for v, p in pipes.items()}
            images: dict[str, torch.Tensor] = {}
            for v in variants:  # warm-up; compile compiles here
                start = time.perf_counter()
                images[v] = gens[v]()
                steps[v]()
                if v == "compile":
                    compile_notes.append(
                        f"{shape.name}: first generation + train step with compile {time.perf_counter() - start:.1f} s"
                    )
            print(f"[{shape.name}] timing", flush=True)
            gen_times = alternate(gens, args.repeats)
            train_times = alternate(steps, args.repeats)
            plain_gen, plain_train = median(gen_times["plain"]), median(train_times["plain"])
            for v in variants:
                g, tr = median(gen_times[v]), median(train_times[v])
                diff = float((images[v] - images["plain"]).abs().max())
                rows.append([
                    shape.name, v, f"{g:.3g}", f"{g / plain_gen:.2f}", f"{peak_bytes(gens[v]) / MIB:.1f}",
                    f"{diff:.1e}", f"{1000 * tr:.0f}", f"{tr / plain_train:.2f}",
                ])
    print()
    print(markdown_table(
        ["config", "variant", f"generation s (batch {args.batch})", "vs plain", "peak MiB", "max abs image diff",
         "train step ms", "vs plain"],
        rows,
    ))
    for note in compile_notes:
        print(note)
    print(f"modiff {modiff.__version__}")


if __name__ == "__main__":
    main()
