"""Which blocks of a trained denoiser a smaller student could skip (``[denoiser] skip_blocks``).

    python benchmarks/skip_blocks_probe.py runs/demo --set mid_block,up_blocks.0.resnets.0 \
        --out benchmarks/results/distill/small-4/blocks.md

For every block the student may skip (its output keeps its input's size), and
for each ``--set`` of blocks: how far the teacher's own prediction moves when
those blocks pass their input on (mean squared change over the prediction's
mean square, on the evaluator's prompts at random noise and timesteps), and
what a denoiser call then costs against the whole network (median of
interleaved calls, one thread). A block that moves the prediction little is
one the distillation has little to teach the rest to do without; the time
says what skipping it buys. The choice is still made by distilling and
evaluating (docs/distillation.md): this only orders the candidates.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import modiff  # noqa: E402
from modiff_distill.student import null_call, skip_blocks  # noqa: E402

PROMPTS = ["a red circle", "a blue square at the top", "a green triangle on the left",
           "a red circle and a blue square", "a purple triangle at the bottom right", "a yellow circle on the right"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the trained run (the teacher)")
    parser.add_argument("--set", action="append", default=[], help="comma-separated blocks skipped together")
    parser.add_argument("--batch", default="1,32", help="batch sizes timed (comma-separated)")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--out", type=Path, help="also write the tables here (Markdown)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    parts = modiff.Pipeline.load(args.run).components
    unet = parts.denoiser.eval()
    spec = unet.spec
    shape = (spec.in_channels, spec.sample_size, spec.sample_size)

    probe = null_call(spec, parts.conditioner)
    prompts = PROMPTS * 6
    x, t = torch.randn(len(prompts), *shape), torch.randint(0, 1000, (len(prompts),))
    with torch.no_grad():
        cond = parts.conditioner.condition(parts.text_embedder.embed(prompts))
        reference = unet(x, t, cond)
    names = [n for n, m in unet.named_modules()
             if n and n.count(".") <= 3 and any(m.children()) and not isinstance(m, torch.nn.ModuleList)]
    variants: dict[str, torch.nn.Module] = {"(none)": unet}
    for name in names + args.set:
        network = copy.deepcopy(unet)
        try:
            skip_blocks(network, [b.strip() for b in name.split(",")], probe, "--set")
        except modiff.SettingsError:
            continue  # not a block that can pass its input on
        variants[name] = network
    change = {}
    with torch.no_grad():
        for name, network in variants.items():
            change[name] = ((network(x, t, cond) - reference).pow(2).mean() / reference.pow(2).mean()).item()
    batches = [int(b) for b in args.batch.split(",")]
    cost: dict[str, list[float]] = {name: [] for name in variants}
    for b in batches:
        xb, tb = torch.randn(b, *shape), torch.full((b,), 500)
        with torch.inference_mode():
            cb = parts.conditioner.condition(parts.text_embedder.embed(PROMPTS[:1] * b))
            calls = {n: (lambda m=m, xb=xb, tb=tb, cb=cb: m(xb, tb, cb)) for n, m in variants.items()}
            times = _common.alternate(calls, args.repeats)
        whole = _common.median(times["(none)"])
        for name in variants:
            cost[name].append(_common.median(times[name]) / whole)
    rows = [[f"`{n}`", f"{change[n]:.3f}", *(f"{c:.2f}" for c in cost[n])] for n in variants]
    table = _common.markdown_table(["skipped", "prediction change", *(f"call cost, batch {b}" for b in batches)], rows)
    text = (f"{args.run}: {len(variants) - 1} blocks and sets that can be skipped\n\n{table}\n\n"
            f"{_common.machine()}; median of {args.repeats} interleaved calls\n")
    print(text)
    if args.out:
        args.out.write_text(f"python benchmarks/skip_blocks_probe.py {' '.join(sys.argv[1:])}\n\n{text}")


if __name__ == "__main__":
    main()
