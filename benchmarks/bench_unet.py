"""modiff's UNet against diffusers' UNet2DConditionModel: same configuration, same weights, one run.

For each configuration the script builds a diffusers ``UNet2DConditionModel``,
translates its configuration with ``modiff_unet.diffusers_layout``, loads the
same state dict into modiff's UNet with ``strict=True``, checks that the
outputs agree, then measures, alternating the two models so that machine load
hits both alike:

* forward: median wall time of an inference forward pass (``torch.no_grad``,
  eval mode);
* train step: median wall time of forward + backward + AdamW step;
* peak memory of one forward and one train step: on CUDA
  ``torch.cuda.max_memory_allocated``; on CPU the peak of live bytes allocated
  inside the step, summed from ``torch.profiler``'s memory events
  (``profile_memory=True``).

Ratios are modiff / diffusers (below 1: modiff is faster or smaller).

    python benchmarks/bench_unet.py                    # all configurations, one CPU thread
    python benchmarks/bench_unet.py --config shapes-8 --repeats 20 --threads 2 --channels-last
"""

from __future__ import annotations

import argparse
import logging
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from _common import count_flops, parse_args, peak_bytes, sync, timed

warnings.filterwarnings("ignore")
logging.getLogger("diffusers").setLevel(logging.ERROR)

import diffusers  # noqa: E402  (reference only: modiff never imports it)

from modiff.protocols import Conditioning  # noqa: E402
from modiff_unet.diffusers_layout import unet_from_diffusers_config  # noqa: E402

CROSS, PLAIN = ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D"), ("DownBlock2D", "UpBlock2D")


def blocks(attention: list[bool]) -> dict[str, Any]:
    return {
        "down_block_types": tuple(CROSS[0] if a else PLAIN[0] for a in attention),
        "up_block_types": tuple(CROSS[1] if a else PLAIN[1] for a in reversed(attention)),
    }


@dataclass
class Case:
    name: str
    config: dict[str, Any]
    batch: int
    size: int
    tokens: int


CASES = [
    # What the shapes demo trains: 4x8x8 latents, a small two-level UNet, batch 32.
    Case(
        "shapes-8",
        dict(block_out_channels=(64, 128), layers_per_block=2, **blocks([True, True]), cross_attention_dim=64,
             attention_head_dim=4, norm_num_groups=32),
        batch=32, size=8, tokens=8,
    ),
    # The same at 16x16 latents.
    Case(
        "shapes-16",
        dict(block_out_channels=(64, 128), layers_per_block=2, **blocks([True, True]), cross_attention_dim=64,
             attention_head_dim=4, norm_num_groups=32),
        batch=16, size=16, tokens=8,
    ),
    # Stable Diffusion 1.x in miniature: four levels, attention on the first three.
    Case(
        "sd1-miniature",
        dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, **blocks([True, True, True, False]),
             cross_attention_dim=128, attention_head_dim=8, norm_num_groups=32),
        batch=4, size=32, tokens=16,
    ),
]


class Runner:
    """Forward and train-step closures for one model on fixed inputs."""

    def __init__(self, model: torch.nn.Module, call: Callable[[], torch.Tensor], target: torch.Tensor):
        self.model, self.call, self.target = model, call, target
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def forward(self) -> None:
        self.model.eval()
        with torch.no_grad():
            self.call()
        sync()

    def train_step(self) -> None:
        self.model.train()
        loss = (self.call() - self.target).square().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        sync()


def build_runners(case: Case, device: torch.device, channels_last: bool) -> tuple[dict[str, Runner], float]:
    """modiff's and diffusers' UNet for ``case`` with the same weights and inputs,
    and the largest difference of their outputs (the check that they compute the same)."""
    torch.manual_seed(0)
    reference = diffusers.UNet2DConditionModel(sample_size=case.size, in_channels=4, out_channels=4, **case.config)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = unet_from_diffusers_config(reference.config)
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.to(device)
    ours.to(device)
    if channels_last:
        reference.to(memory_format=torch.channels_last)
        ours.to(memory_format=torch.channels_last)

    g = torch.Generator().manual_seed(1)
    b = case.batch
    x = torch.randn(b, 4, case.size, case.size, generator=g).to(device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (b,), generator=g).float().to(device)
    context = torch.randn(b, case.tokens, case.config["cross_attention_dim"], generator=g).to(device)
    lengths = torch.randint(1, case.tokens + 1, (b,), generator=g)
    mask = (torch.arange(case.tokens)[None, :] < lengths[:, None]).to(device)
    target = torch.randn(x.shape, generator=g).to(device)
    cond = Conditioning(context=context, context_mask=mask)

    def call_reference() -> torch.Tensor:
        return reference(x, t, encoder_hidden_states=context, encoder_attention_mask=mask).sample

    def call_ours() -> torch.Tensor:
        return ours(x, t, cond)

    reference.eval(), ours.eval()
    with torch.no_grad():
        diff = (call_ours() - call_reference()).abs().max().item()
    runners = {"modiff": Runner(ours, call_ours, target), "diffusers": Runner(reference, call_reference, target)}
    return runners, diff


def bench_case(
    case: Case, repeats: int, device: torch.device, channels_last: bool, *, flops: bool = False
) -> dict[str, tuple[float, float]]:
    """Median forward and train-step times, peak memory, and (``flops``) the
    FLOPs of one train step, as ``{measure: (modiff, diffusers)}``."""
    runners, diff = build_runners(case, device, channels_last)
    if diff > 1e-4:
        raise SystemExit(f"{case.name}: outputs differ by {diff:.2e}; the comparison would be meaningless")
    for _ in range(2):  # warm up kernels, the allocator and the optimiser's state (the first two steps are slow)
        for r in runners.values():
            r.forward()
            r.train_step()
    results: dict[str, dict[str, list[float]]] = {k: {"forward": [], "train": []} for k in runners}
    for _ in range(repeats):  # alternate, so load changes hit both models alike
        for key, r in runners.items():
            results[key]["forward"].append(timed(r.forward))
        for key, r in runners.items():
            results[key]["train"].append(timed(r.train_step))
    out: dict[str, tuple[float, float]] = {}
    for what in ("forward", "train"):
        out[f"{what} ms"] = tuple(1000 * statistics.median(results[k][what]) for k in runners)  # type: ignore[assignment]
    mib = 1024 * 1024
    out["forward peak MiB"] = tuple(peak_bytes(r.forward) / mib for r in runners.values())  # type: ignore[assignment]
    out["train peak MiB"] = tuple(peak_bytes(r.train_step) / mib for r in runners.values())  # type: ignore[assignment]
    if flops:
        gflop = tuple(count_flops(r.train_step) / 1e9 for r in runners.values())
        out["train GFLOP"] = gflop  # type: ignore[assignment]
    out["max |diff|"] = (diff, 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=[c.name for c in CASES], action="append", help="configurations to run")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per measurement (median)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared 2-core machine, OpenMP synchronisation under outside "
        "load made 2-thread timings 3-10x slower and erratic; 0 keeps torch's default)",
    )
    parser.add_argument("--channels-last", action="store_true", help="both models and inputs in channels_last")
    args = parse_args(parser)
    device = torch.device(args.device)
    cases = [c for c in CASES if not args.config or c.name in args.config]
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, device {device}, "
        f"threads {torch.get_num_threads()}, repeats {args.repeats}, channels_last {args.channels_last}"
    )
    header = f"{'config':<15} {'measure':<18} {'modiff':>10} {'diffusers':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for case in cases:
        results = bench_case(case, args.repeats, device, args.channels_last)
        label = f"{case.name}"
        for measure, (ours, ref) in results.items():
            if measure == "max |diff|":
                print(f"{label:<15} {measure:<18} {ours:>10.1e}")
                continue
            print(f"{label:<15} {measure:<18} {ours:>10.1f} {ref:>10.1f} {ours / ref:>7.2f}")
            label = ""
        shape = f"batch {case.batch}, 4x{case.size}x{case.size}, {case.tokens} tokens"
        print(f"{'':<15} ({shape})")


if __name__ == "__main__":
    main()
