"""Helpers shared by the benchmark scripts: timing, peak memory, FLOPs, tables, and
Stable-Diffusion-shaped diffusers pipelines built offline.

The scripts run as ``python benchmarks/<script>.py``, so this folder is on
``sys.path`` and ``import _common`` works. diffusers and transformers are
imported lazily, and only as references: modiff never imports them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]

# -------------------------------------------------------------- timing and memory


def sync() -> None:
    """Wait for queued device work, so a wall-clock time covers all of it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes (device work included)."""
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def alternate(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Time every function ``repeats`` times, taking turns, so that changes in the
    machine's load during the run hit each of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            times[key].append(timed(fn))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak live bytes allocated while ``fn`` runs (CUDA: the allocator's peak).

    On CPU this is the running sum of ``torch.profiler``'s memory events
    (``profile_memory=True``): tensors allocated and freed inside the call.
    Memory held before the call (weights) is not counted, which is what makes
    the number comparable between two implementations of the same model.
    """
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


MIB = 1024 * 1024

# -------------------------------------------------------------- FLOPs


def _cpu_flash_forward(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward(
    grad: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad, query, key, value)


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call of ``fn`` (matrix products,
    convolutions and attention, forward and backward; elementwise work such as
    normalisation and the optimiser update is not counted, as usual).

    torch's counter does not know the CPU flash-attention kernel that
    ``scaled_dot_product_attention`` uses on CPU; it is counted here with the
    same formula as the CUDA kernels.
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping: dict[Any, Any] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_forward
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_flash_backward
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype = torch.float32, *, n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Measured FLOP/s of a large square ``torch.mm`` (the best of ``repeats``)
    with the current thread count."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    torch.mm(a, b)  # warm up
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def conv_peak(*, channels: int = 512, size: int = 16, batch: int = 8, repeats: int = 5, device: str = "cpu") -> float:
    """Measured FLOP/s of a large 3x3 convolution (the best of ``repeats``).

    A convolution is a matrix multiply too, but on CPU it runs in oneDNN, not
    in the BLAS behind ``torch.mm``; where the BLAS does not use the CPU's
    widest vector units (MKL on AMD CPUs with AVX-512), oneDNN reaches about
    twice ``torch.mm``'s rate, and a UNet, mostly convolutions, would seem to
    run above a ``torch.mm`` "peak".
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=g).to(device)
    w = torch.randn(channels, channels, 3, 3, generator=g).to(device)
    with torch.no_grad():
        torch.nn.functional.conv2d(x, w, padding=1)
        best = min(timed(lambda: torch.nn.functional.conv2d(x, w, padding=1)) for _ in range(repeats))
    return 2 * batch * channels * channels * 9 * size * size / best


def dense_peaks(device: str = "cpu") -> dict[str, float]:
    """FLOP/s of the dense kernels a model's FLOPs run in, measured here:
    ``{"mm fp32": ..., "conv fp32": ..., "mm bf16": ...}``. The fp32 peak a
    model is compared with is the larger of the first two."""
    # A CPU without bf16 units emulates it at about 1 GFLOP/s per core: a 2048^2
    # product takes 13 s there, and five of them were most of the GPU check's
    # dry run in CI. A 512^2 product reads that rate as well, in 0.2 s.
    bf16_side = 2048 if str(device).startswith("cuda") else 512
    return {
        "mm fp32": matmul_peak(torch.float32, device=device),
        "conv fp32": conv_peak(device=device),
        "mm bf16": matmul_peak(torch.bfloat16, n=bf16_side, device=device),
    }


# -------------------------------------------------------------- output


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table, numbers already formatted by the caller."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """One line naming the CPU, torch and the thread count (for the docs' tables)."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    cores = os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu} ({cores} cores){gpu}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line of a timing script that has a ``--threads`` option:
    adds ``--device`` (CUDA where there is one) as the last option, parses, and
    applies ``--threads`` (0 keeps torch's default) before anything is timed."""
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


# -------------------------------------------------------------- SD-shaped diffusers pipelines


@dataclass(frozen=True)
class SDShape:
    """The shape of a Stable-Diffusion-layout pipeline (UNet, KL autoencoder, CLIP text encoder).

    ``unet_attention[i]`` says whether UNet level ``i`` has transformer
    blocks; ``unet_heads`` is the number of heads (diffusers'
    ``attention_head_dim`` in SD configs). ``train_batch`` is the batch of the
    UNet forward/train rows.
    """

    name: str
    image_size: int
    unet_channels: tuple[int, ...]
    unet_attention: tuple[bool, ...]
    unet_layers: int
    unet_heads: int
    unet_mid_attention: bool
    unet_groups: int
    vae_channels: tuple[int, ...]
    vae_layers: int
    vae_groups: int
    text_width: int
    text_layers: int
    text_heads: int
    tokens: int
    train_batch: int

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downscale

    def unet_config(self) -> dict[str, Any]:
        """``UNet2DConditionModel`` keyword arguments (in/out channels and size excluded)."""
        cross, plain = ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D"), ("DownBlock2D", "UpBlock2D")
        return dict(
            block_out_channels=self.unet_channels,
            layers_per_block=self.unet_layers,
            down_block_types=tuple(cross[0] if a else plain[0] for a in self.unet_attention),
            up_block_types=tuple(cross[1] if a else plain[1] for a in reversed(self.unet_attention)),
            mid_block_type="UNetMidBlock2DCrossAttn" if self.unet_mid_attention else "UNetMidBlock2D",
            cross_attention_dim=self.text_width,
            attention_head_dim=self.unet_heads,
            norm_num_groups=self.unet_groups,
        )


SHAPES: dict[str, SDShape] = {
    # The first demo's model (configs/demo-baseline.toml; CLIP, so diffusers can run it) in SD's layout:
    # 32 px, f = 4 autoencoder [16, 32, 32] (8 groups, one block per level), UNet [64, 128] with one block
    # per level, attention on both levels and in the middle (4 heads), 16 groups; its CLIP text tower
    # (64 wide, 2 layers, 4 heads, 77 tokens); it trains with batch 32.
    "demo": SDShape(
        "demo", image_size=32, unet_channels=(64, 128), unet_attention=(True, True), unet_layers=1, unet_heads=4,
        unet_mid_attention=True, unet_groups=16, vae_channels=(16, 32, 32), vae_layers=1, vae_groups=8,
        text_width=64, text_layers=2, text_heads=4, tokens=77, train_batch=32,
    ),
    # Stable Diffusion 1.x in miniature: a four-level UNet with attention on the first three levels and in the
    # middle, two blocks per level, 8 heads, 32 groups (bench_unet's sd1-miniature); a four-level f = 8
    # autoencoder with two blocks per level; a CLIP text encoder of 64-wide heads padded to 77 tokens;
    # 128 px images, so 4 x 16 x 16 latents.
    "sd1-miniature": SDShape(
        "sd1-miniature", image_size=128, unet_channels=(64, 128, 256, 256),
        unet_attention=(True, True, True, False), unet_layers=2, unet_heads=8, unet_mid_attention=True,
        unet_groups=32, vae_channels=(32, 64, 128, 128), vae_layers=2, vae_groups=32,
        text_width=128, text_layers=2, text_heads=2, tokens=77, train_batch=8,
    ),
    # Stable Diffusion 1.5's shapes at full size (random weights; for a GPU): 512 px, f = 8 autoencoder
    # [128, 256, 512, 512] with two blocks per level, UNet [320, 640, 1280, 1280] with two blocks per
    # level, attention on levels 0-2 and in the middle, 8 heads, 32 groups, 768-wide context; CLIP
    # ViT-L/14's text tower (768 wide, 12 layers, 12 heads, 77 tokens; only the vocabulary is the tiny
    # tokenizer's). 4 x 64 x 64 latents; about 860 M UNet parameters.
    "sd15": SDShape(
        "sd15", image_size=512, unet_channels=(320, 640, 1280, 1280),
        unet_attention=(True, True, True, False), unet_layers=2, unet_heads=8, unet_mid_attention=True,
        unet_groups=32, vae_channels=(128, 256, 512, 512), vae_layers=2, vae_groups=32,
        text_width=768, text_layers=12, text_heads=12, tokens=77, train_batch=2,
    ),
}

#: Precision names of the benchmarks' ``--dtype`` options.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sd_tiny() -> Any:
    """The sd plugin's offline test helpers (tokenizer, weight perturbation, pipeline assembly)."""
    folder = str(ROOT / "plugins" / "sd" / "tests")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import _sd_tiny

    return _sd_tiny


def quiet_libraries() -> None:
    """Silence diffusers' and transformers' progress bars and advice."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    _sd_tiny().quiet_libraries()
    logging.getLogger("diffusers").setLevel(logging.ERROR)


def make_sd_pipeline(shape: SDShape, seed: int = 0, device: str | torch.device = "cpu") -> Any:
    """A diffusers ``StableDiffusionPipeline`` of ``shape`` with random, perturbed
    weights (no parameter left at an inert value), built offline, with SD's DDIM
    configuration and a CLIP tokenizer trained on a few captions.

    With a CUDA ``device`` the modules are made and perturbed there (seconds
    instead of a minute for SD 1.5's billion parameters; other numbers than a
    CPU build, which is the same on every machine)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tiny = _sd_tiny()
    tok = tiny.make_tokenizer()
    tok.model_max_length = shape.tokens
    device = torch.device(device)
    torch.manual_seed(seed)
    with device:
        text, unet, vae = _sd_modules(shape, tok, CLIPTextConfig, CLIPTextModel, UNet2DConditionModel, AutoencoderKL)
    for i, m in enumerate((text, unet, vae)):
        if device.type == "cpu":
            tiny.perturb(m, seed * 10 + i, scale=0.02)
        else:
            g = torch.Generator(device=device).manual_seed(seed * 10 + i)
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.02 * torch.randn(p.shape, generator=g, device=device))
    return tiny.assemble_pipeline(text, tok, unet, vae)


def _sd_modules(
    shape: SDShape, tok: Any, config_cls: Any, text_cls: Any, unet_cls: Any, vae_cls: Any
) -> tuple[Any, Any, Any]:
    text = text_cls(
        config_cls(
            vocab_size=len(tok), hidden_size=shape.text_width, intermediate_size=4 * shape.text_width,
            num_hidden_layers=shape.text_layers, num_attention_heads=shape.text_heads,
            max_position_embeddings=shape.tokens, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    unet = unet_cls(sample_size=shape.latent_size, in_channels=4, out_channels=4, **shape.unet_config())
    levels = len(shape.vae_channels)
    vae = vae_cls(
        block_out_channels=shape.vae_channels, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, latent_channels=4, layers_per_block=shape.vae_layers,
        norm_num_groups=shape.vae_groups, sample_size=shape.image_size,
    )
    return text, unet, vae


def prompts(n: int) -> list[str]:
    """``n`` prompts cycling through the tokenizer's captions."""
    captions = _sd_tiny().CAPTIONS
    return [captions[i % len(captions)] for i in range(n)]
