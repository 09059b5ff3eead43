"""Sampler overhead per step: modiff-schedulers against diffusers, same run.

What is timed is everything a sampler does around the network: building the
grid of timesteps and noise levels (``set_timesteps`` for diffusers, the plan
inside ``sample`` for us), scaling inputs, converting predictions, the update
itself and drawing noise. The "network" returns a tensor computed beforehand,
so model time is excluded (about a microsecond per call).

For each sampler the equivalent diffusers scheduler runs the loop its
pipelines run (``scale_model_input``, model, ``step``), with the same
schedule (Stable Diffusion's scaled_linear betas, epsilon prediction,
trailing spacing), float32, one thread, at two latent sizes: a tiny one
(1 x 4 x 8 x 8: pure Python overhead) and Stable Diffusion's at 512 px
(1 x 4 x 64 x 64: tensor arithmetic starts to count). The two sides run
alternately, repeat after repeat, and each cell is the fastest repeat (on a
shared machine outside load only ever adds time); the ratio is diffusers'
time over ours (> 1: we are faster).

Run: ``python benchmarks/bench_schedulers.py [--steps 50] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import modiff
from modiff_schedulers.scheduler import build

DIFFUSERS = {
    "ddpm": ("DDPMScheduler", {"clip_sample": False}),
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp-2m-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}
SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "timestep_spacing": "trailing"}


def constant_model(shape: tuple[int, ...]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    out = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 0.5

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return out

    return model


def ours_runner(name: str, shape: tuple[int, ...], steps: int) -> Callable[[], None]:
    sched = build(name, SCHEDULE)
    model = constant_model(shape)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    def run() -> None:
        sched.sample(model, noise, steps, generator=modiff.generators([0] * shape[0]))

    return run


def diffusers_runner(name: str, shape: tuple[int, ...], steps: int) -> Callable[[], None]:
    import diffusers

    cls_name, extra = DIFFUSERS[name]
    sched = getattr(diffusers, cls_name)(**SCHEDULE, **extra)
    model = constant_model(shape)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    takes_generator = "generator" in inspect.signature(sched.step).parameters

    def run() -> None:
        gens = [torch.Generator().manual_seed(0) for _ in range(shape[0])]
        kwargs: dict[str, Any] = {"generator": gens} if takes_generator else {}
        sched.set_timesteps(steps)
        x = noise * sched.init_noise_sigma
        for t in sched.timesteps:
            x_in = sched.scale_model_input(x, t)
            x = sched.step(model(x_in, t), t, x, **kwargs).prev_sample

    return run


def per_step(runs: list[Callable[[], None]], steps: int, repeats: int) -> list[float]:
    """Fastest time per step of each runner, running them in turn ``repeats`` times (after a warm-up)."""
    best = [float("inf")] * len(runs)
    for r in range(repeats + 1):
        for k, run in enumerate(runs):
            start = time.perf_counter()
            run()
            if r:
                best[k] = min(best[k], time.perf_counter() - start)
    return [b / steps for b in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--samplers", nargs="*", default=list(DIFFUSERS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    import diffusers  # noqa: F401  (import time kept out of the measurements)

    shapes = [(1, 4, 8, 8), (1, 4, 64, 64)]
    print(f"per-step sampler overhead, {args.steps} steps, best of {args.repeats}, float32, 1 thread")
    print(f"{'sampler':16s} {'latent':>12s} {'modiff us':>10s} {'diffusers us':>13s} {'ratio':>7s}")
    ratios = []
    for name in args.samplers:
        for shape in shapes:
            runs = [ours_runner(name, shape, args.steps), diffusers_runner(name, shape, args.steps)]
            ours, theirs = per_step(runs, args.steps, args.repeats)
            ratios.append(theirs / ours)
            size = "x".join(map(str, shape[1:]))
            print(f"{name:16s} {size:>12s} {ours * 1e6:10.1f} {theirs * 1e6:13.1f} {theirs / ours:6.2f}x")
    geo = statistics.geometric_mean(ratios)
    print(f"geometric mean of the ratios: {geo:.2f}x (diffusers time / modiff time)")


if __name__ == "__main__":
    main()
