"""Memory and time of importing an SD 1.5-sized single-file checkpoint.

    python plugins/sd/benchmarks/bench_import.py [--dtype fp16] [--run-precision fp32]

Writes random weights with SD 1.5's exact tensor names and shapes (1.07 B
parameters, taken from configs/sd15.toml built on the meta device) as one
original-layout .safetensors file, then measures, each in a fresh process:

* ``import-sd``: modiff_sd.importer.import_sd (memory-mapped, one component
  at a time, cast as read);
* the reference, "load_file, per part": a plain conversion script
  (safetensors' ``load_file`` of the whole checkpoint, then per part: rename,
  cast, save). ``load_file`` returns tensors backed by the memory map, so
  this too holds about one part at a time; it checks nothing;
* ``Pipeline.load`` of the imported run (what generating needs: the model in
  memory, in float32 modules);
* the baseline: the same imports without any weights.

Peak anonymous memory (what the process holds, sampled every 10 ms from
/proc/self/status) above the baseline is compared with the checkpoint's size;
file-backed pages (the memory-mapped checkpoint, which the kernel can drop)
are shown apart. Linux only. Needs about 3x the checkpoint size of free disk
and, with --run-precision fp32, about 2.5x of free memory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
VIT_L14_TEXT = {
    "model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407, "projection_dim": 768,
}

PRELUDE = "import torch, modiff, modiff_sd.importer, safetensors.torch, transformers\n"
JOBS = {
    "baseline": PRELUDE,
    "import-sd": PRELUDE + (
        "from modiff_sd.importer import import_sd\n"
        "import_sd(sys.argv[1], sys.argv[2], tokenizer_dir=sys.argv[3], precision=sys.argv[5])\n"
    ),
    "Pipeline.load(run)": PRELUDE + (
        "from modiff.pipeline import Pipeline\n"
        "Pipeline.load(sys.argv[2], device='cpu')\n"
    ),
    "load_file, per part": PRELUDE + (
        "from safetensors.torch import load_file, save_file\n"
        "from modiff_sd import layout\n"
        "dtype = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}[sys.argv[5]]\n"
        "ckpt = load_file(sys.argv[1])\n"
        "split = layout.split_original(ckpt)\n"
        "import os; os.makedirs(sys.argv[2], exist_ok=True)\n"
        "for part, names in split.parts.items():\n"
        "    prefix = layout.ORIGINAL_PREFIXES[part]\n"
        "    renames = layout.original_renames(part, names)\n"
        "    out = {r.target: r.apply(ckpt[prefix + n]).to(dtype).contiguous() for n, r in renames.items()}\n"
        "    save_file(out, os.path.join(sys.argv[2], part + '.safetensors'))\n"
    ),
}


SAMPLER = """
import threading
PEAK = {"RssAnon": 0, "RssFile": 0}
def _sample():
    while True:
        with open("/proc/self/status") as fh:
            for line in fh:
                key = line.split(":")[0]
                if key in PEAK:
                    PEAK[key] = max(PEAK[key], int(line.split()[1]))
        time.sleep(0.01)
threading.Thread(target=_sample, daemon=True).start()
"""


def measure(code: str, *args: str) -> tuple[float, float, float]:
    """(seconds, peak anonymous MB, peak file-backed MB) of ``code`` in a fresh interpreter.

    Anonymous memory is what the process really holds; file-backed pages are
    the memory-mapped checkpoint, which the kernel may drop at any time.
    """
    wrapper = (
        "import sys, time\n" + SAMPLER + "t0 = time.perf_counter()\n" + code
        + "\ntime.sleep(0.05)\nprint(time.perf_counter() - t0, PEAK['RssAnon'] / 1024, PEAK['RssFile'] / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *args], check=True, capture_output=True, text=True)
    seconds, anon, mapped = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(anon), float(mapped)


def write_checkpoint(folder: Path, dtype_name: str) -> tuple[Path, Path, int]:
    """An SD 1.5-shaped original-layout checkpoint of random weights, and a tokenizer folder."""
    import dataclasses

    import torch
    from safetensors.torch import save_file
    from transformers import CLIPTokenizer

    import modiff
    from modiff.settings import load
    from modiff_sd import layout

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    text = folder / "text"
    text.mkdir()
    (text / "config.json").write_text(json.dumps(VIT_L14_TEXT))
    tok = CLIPTokenizer().train_new_from_iterator(["a photograph of an astronaut riding a horse"], vocab_size=300)
    tok.model_max_length = 77
    tok.save_pretrained(str(text))
    resolved = load([ROOT / "configs" / "sd15.toml"], [f"text_embedder.pretrained={text}"], environ={})
    weighted = {k: v for k, v in resolved.components.items() if k in ("encoder", "text_embedder", "denoiser")}
    with torch.device("meta"):
        built = modiff.build(dataclasses.replace(resolved, components=weighted), device="meta")
    g = torch.Generator().manual_seed(0)

    def random(module: torch.nn.Module, skip: str = "~") -> dict[str, torch.Tensor]:
        return {
            k: (0.02 * torch.randn(v.shape, generator=g)).to(dtype)
            for k, v in module.state_dict().items()
            if not k.startswith(skip)
        }

    ckpt = layout.to_original_checkpoint(
        random(built.denoiser), random(built.encoder, skip="latent_norm."), random(built.text_embedder)
    )
    path = folder / "sd15-random.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt.items()}, str(path))
    return path, text, sum(v.numel() for v in ckpt.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp16", help="checkpoint precision")
    parser.add_argument("--run-precision", choices=["fp32", "fp16", "bf16"], default=None,
                        help="the imported run's precision (default: the checkpoint's)")
    args = parser.parse_args()
    args.run_precision = args.run_precision or args.dtype
    folder = Path(tempfile.mkdtemp(prefix="bench-import-sd-"))
    try:
        t0 = time.perf_counter()
        path, tokenizer, count = write_checkpoint(folder, args.dtype)
        size = path.stat().st_size / 2**20
        took = time.perf_counter() - t0
        print(f"wrote {count / 1e9:.3f} B parameters ({size:.0f} MB, {args.dtype}) in {took:.0f} s; "
              f"run precision {args.run_precision}")
        rows = {}
        run = folder / "run"
        for name, code in JOBS.items():
            out = run if name in ("import-sd", "Pipeline.load(run)") else folder / "reference"
            rows[name] = measure(code, str(path), str(out), str(tokenizer), args.dtype, args.run_precision)
        shutil.rmtree(folder / "reference", ignore_errors=True)
        base = rows["baseline"][1]
        print(f"\n{'method':<20} {'seconds':>8} {'anon MB':>8} {'above base':>11} {'/ file':>7} {'mapped MB':>10}")
        for name, (seconds, anon, mapped) in rows.items():
            above = anon - base
            print(f"{name:<20} {seconds:8.1f} {anon:8.0f} {above:11.0f} {above / size:7.2f} {mapped:10.0f}")
        ours, theirs = rows["import-sd"][1] - base, rows["load_file, per part"][1] - base
        print(f"\nimport-sd: anonymous memory above baseline / reference's = {ours / theirs:.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
