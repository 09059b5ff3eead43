"""Fingerprint what a fixed settings file trains and generates, to show that a
refactor changes no bit.

    python benchmarks/same_images.py --write benchmarks/fingerprints/demo-baseline.json
    python benchmarks/same_images.py --check benchmarks/fingerprints/demo-baseline.json

Trains ``configs/demo-baseline.toml`` at a tiny budget (every stage: autoencoder,
CLIP, denoiser), generates images for its sample prompts with two samplers,
and records the SHA-256 of every component's weights and of the images' raw
float32 bytes. Floating-point results depend on the CPU's kernels, so a
fingerprint is only comparable on the machine (CPU model, torch version,
thread count) that wrote it; ``--check`` says so when they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "configs" / "demo-baseline.toml"
TINY = [
    "train.encoder.steps=20",
    "train.encoder.batch_size=8",
    "train.text_embedder.steps=10",
    "train.text_embedder.batch_size=16",
    "train.steps=30",
    "train.batch_size=8",
    "train.checkpoint_every=10",
    "data.size=256",
    "run.device=cpu",
]


def machine() -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    return {"cpu": cpu, "torch": torch.__version__, "threads": str(torch.get_num_threads())}


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()


def fingerprint(settings: Path = SETTINGS) -> dict[str, object]:
    from modiff.pipeline import Pipeline
    from modiff.settings import load
    from modiff.workflows import train_run

    with tempfile.TemporaryDirectory() as tmp:
        resolved = load([settings], [*TINY, f"run.runs_dir={json.dumps(tmp)}"])
        from modiff.workflows import run_dir_for

        run = run_dir_for(resolved)
        train_run(resolved, run, progress=False)
        pipeline = Pipeline.load(run.path)
        weights = {role: hashlib.sha256(b"".join(digest(v).encode() for _, v in sorted(m.state_dict().items())))
                   .hexdigest() for role, m in pipeline.components.modules()}
        prompts = list(resolved.sample.prompts)
        images = {
            "ddim": digest(pipeline.generate_tensor(prompts, seed=0, steps=8)),
            "euler-ancestral": digest(
                pipeline.with_sampler("euler-ancestral").generate_tensor(prompts, seed=3, steps=6)
            ),
        }
    return {"machine": machine(), "settings": str(settings.relative_to(ROOT)), "tiny": TINY,
            "weights": weights, "images": images}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, help="write the fingerprint to this JSON file")
    group.add_argument("--check", type=Path, help="compare with the fingerprint in this JSON file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", type=Path, default=SETTINGS,
                        help="settings file to fingerprint (default configs/demo-baseline.toml)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    found = fingerprint(args.settings.resolve())
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.write}")
        return 0
    expected = json.loads(args.check.read_text())
    if expected["machine"] != found["machine"]:
        print(f"note: written on {expected['machine']}, checked on {found['machine']}: floating-point "
              "kernels may differ, so a mismatch here need not be a regression")
    bad = [f"{part}.{key}" for part in ("weights", "images")
           for key in sorted(set(expected[part]) | set(found[part]))
           if expected[part].get(key) != found[part].get(key)]  # type: ignore[union-attr]
    if bad:
        print("DIFFERENT: " + ", ".join(bad))
        return 1
    print(
        f"identical: {len(expected['weights'])} components' weights and {len(expected['images'])} image sets, "
        "bit for bit"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
