"""The CUDA tier: what the project promises on a GPU, checked against the CPU.

Every test here is marked ``cuda`` and runs on the device named by the
environment variable ``MODIFF_CHECK_DEVICE`` (default ``cuda``). Without a
CUDA device the tests are collected and skipped, saying why. With
``MODIFF_CHECK_DEVICE=cpu`` the same code runs on the CPU as a dry run: the
"device" side is then a second CPU copy, so every comparison must hold
trivially (fp32) or within the CPU's own bf16 error, which is what makes
the tier trustworthy before it ever meets a GPU. ``benchmarks/gpu_check.py``
runs the tier both ways (``--dry-run`` on the CPU, in CI).

What is checked, each against the CPU in fp32 (the reference):

* every built-in component (encoders, text embedders, conditioners,
  denoisers, the schedulers' samplers) gives the CPU's outputs on the device,
  in fp32 and under bf16 and fp16 autocast, within :data:`TOLERANCE`;
* per-sample noise: the same seed gives bit-identical initial noise on the
  device, the same images within tolerance, and the same image for a prompt
  alone or in a batch of 8;
* the sampling loop never makes the host wait for the device;
* a few training steps on the device (plain, bf16, fp16 with a gradient
  scaler, channels_last, torch.compile) lower the loss, and a run interrupted
  and resumed ends bit for bit where an uninterrupted one ends;
* ``Pipeline.load`` of a run trained on the CPU generates on the device, and
  the reverse.

The SD 1.x import (fp16 against diffusers) is in
``plugins/sd/tests/cuda/test_cuda.py``, next to its pipeline builder.

fp32 comparisons run with TF32 off (``torch.backends.cudnn.allow_tf32``
is on by default and rounds convolution inputs to 10 bits of mantissa, about
1e-3 relative): fp32 here means fp32, so a wrong result cannot hide behind a
tolerance sized for TF32. On a CPU, fp16 autocast runs in bf16 (see
``modiff.devices.autocast``), so the dry run holds fp16 to the bf16 row.
"""

from __future__ import annotations

import copy
import functools
import json
import linecache
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

# cuBLAS is deterministic only with a fixed workspace; it reads this when it starts (the first matrix product).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import modiff
from modiff.assembly import Components, build
from modiff.devices import autocast
from modiff.pipeline import Pipeline
from modiff.protocols import Conditioning, TextEmbedding
from modiff.runs import RunDir
from modiff.settings import load
from modiff.testing import build_one, plugin_registry
from modiff.testing.devices import host_syncs

DEVICE = os.environ.get("MODIFF_CHECK_DEVICE", "cuda")
ON_CPU = torch.device(DEVICE).type == "cpu"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        torch.device(DEVICE).type == "cuda" and not torch.cuda.is_available(),
        reason="no CUDA device here: the cuda tier needs a GPU (benchmarks/gpu_check.py runs it there; "
        "MODIFF_CHECK_DEVICE=cpu runs it on the CPU as a dry run)",
    ),
    pytest.mark.filterwarnings("ignore:.*CLIP tokens"),  # long prompts are truncated, on purpose
    pytest.mark.filterwarnings("ignore:.*only the first max_tokens"),
    pytest.mark.filterwarnings("ignore:unknown word"),  # word2vec's vocabulary is the four captions'
]


@dataclass(frozen=True)
class Tolerance:
    """Largest ``max |device - cpu| / max(1, max |cpu|)`` allowed, per precision.

    ``call``: one call of a component (its inputs identical on both sides).
    ``images``: images after a few sampler steps with guidance, where each
    step's error feeds the next and guidance multiplies it.
    """

    call: float
    images: float


#: The one table of tolerances of this tier. The reference is always fp32 on the CPU (or diffusers'
#: fp32 images for the SD import). Measured with the CPU's autocast, the limits leave room for the GPU's
#: other kernels:
#: fp32: the same arithmetic in another order (TF32 off): ~1e-6 per call, grown a little by sampling.
#: bf16 (8 bits of mantissa): up to 1.9e-2 for one call of these tiny networks (the UNet, the KL
#: autoencoder); images 1.5e-2 (tiny pipeline, guidance 3) and 5.7e-2 (tiny SD, guidance 7.5).
#: fp16 (11 bits): up to 2.1e-3 per call; images 2.2e-3 and 9.1e-3 (diffusers' own fp16 SD: 7.9e-3).
#: (modiff's autocast runs fp16 as bf16 on a CPU, so the dry run is held to the bf16 row.)
TOLERANCE: dict[str, Tolerance] = {
    "fp32": Tolerance(call=1e-4, images=1e-3),
    "bf16": Tolerance(call=6e-2, images=1.2e-1),
    "fp16": Tolerance(call=1e-2, images=3e-2),
}
PRECISIONS = tuple(TOLERANCE)


def tolerance(precision: str) -> Tolerance:
    """The row that applies on this tier's device (fp16 runs as bf16 on a CPU)."""
    return TOLERANCE["bf16" if precision == "fp16" and ON_CPU else precision]


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    reference, other = reference.detach().float().cpu(), other.detach().float().cpu()
    assert reference.shape == other.shape, (tuple(reference.shape), tuple(other.shape))
    if reference.numel() == 0:
        return 0.0
    scale = max(1.0, float(reference.abs().max()))
    return float((reference - other).abs().max()) / scale


INSTALLED = plugin_registry(entry_points=True)
PROMPTS = ["a red circle in the top left", "a blue square", "a small green triangle at the bottom right and more"]
CAPTIONS = ["a red circle", "a blue square on the left", "a green triangle", "a yellow square at the top"]


@pytest.fixture(scope="module", autouse=True)
def fp32_is_fp32() -> Iterator[None]:
    """No TF32, and no left-over deterministic mode from a training run, for the module's tests."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: a second thread only adds waiting on a loaded CPU
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- the tiny pipeline

#: Real built-in components at a tiny size (16 px, f = 2 autoencoder, 8 x 8 latents).
BASE: dict[str, Any] = {
    "run": {"image_size": 16, "device": "cpu"},
    "encoder": {"plugin": "kl-autoencoder", "channels": [8, 8], "norm_num_groups": 4},
    "text_embedder": {
        "plugin": "clip", "width": 16, "heads": 2, "layers": 1, "vision_width": 16, "vision_heads": 2,
        "vision_layers": 1, "projection_dim": 16, "max_tokens": 8,
    },
    "conditioner": {"plugin": "cross-attention"},
    "denoiser": {
        "plugin": "unet", "channels": [16, 32], "layers_per_block": 1, "attention_levels": [0, 1],
        "mid_attention": True, "norm_num_groups": 8, "head_dim": 8,
    },
    "scheduler": {"plugin": "ddim"},
    "sample": {"steps": 4, "guidance": 3.0},
}


def settings(changes: dict[str, Any] | None = None, sets: tuple[str, ...] = ()) -> Any:
    """BASE with whole tables replaced by ``changes`` and ``sets`` applied."""
    data = copy.deepcopy(BASE)
    data.update(copy.deepcopy(changes or {}))
    return load(base=data, sets=list(sets), environ={}, registry=INSTALLED)


def perturb(components: Components, seed: int = 1) -> None:
    """Move every weight off its initial value (zeros, ones), so no output is trivially equal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in components.modules():
            for p in module.parameters():
                p.add_((0.05 * torch.randn(p.shape, generator=g)).to(p.device))


def fit_text(components: Components) -> None:
    """A text embedder fitted on captions (word2vec) is fitted here, as its training stage would."""
    text = components.text_embedder
    if text is not None and isinstance(text, modiff.Fittable) and text.needs_training:
        text.fit(CAPTIONS * 4)
        text.needs_training = False


@functools.cache
def cpu_components(changes_json: str) -> Components:
    """The tiny pipeline on the CPU, perturbed (cached: several tests share it)."""
    torch.manual_seed(0)
    components = build(settings(json.loads(changes_json)), device="cpu")
    fit_text(components)
    perturb(components)
    for _, module in components.modules():
        module.eval()
    return components


def pipeline_pair(sets: tuple[str, ...] = ()) -> tuple[Pipeline, Pipeline]:
    """The tiny pipeline on the CPU and on the device, built from the same settings, same weights."""
    reference = cpu_components("{}")
    pair = []
    for device in ("cpu", DEVICE):
        components = build(settings(sets=sets), device=device)
        for role, module in components.modules():
            module.load_state_dict(dict(reference.modules())[role].state_dict())
            module.eval()
        pair.append(Pipeline(components))
    return pair[0], pair[1]


# ---------------------------------------------------------------- every component, CPU against device


@dataclass(frozen=True)
class Case:
    """One built-in component: its role, its registered name, and the tables that build it."""

    role: str
    name: str
    changes: tuple[tuple[str, dict[str, Any]], ...] = ()
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.role}:{self.label or self.name}"

    def changes_json(self) -> str:
        return json.dumps(dict(self.changes), sort_keys=True)


def _sampler_cases() -> list[Case]:
    names = sorted(r.name for r in INSTALLED.all("scheduler") if r.distribution == "modiff-schedulers")
    cases = [Case("scheduler", n, (("scheduler", {"plugin": n}),)) for n in names]
    cases.append(Case("scheduler", "ddim", (("scheduler", {"plugin": "ddim", "eta": 1.0}),), "ddim-eta1"))
    cases.append(Case("scheduler", "euler", (("scheduler", {"plugin": "euler", "s_churn": 1.0}),), "euler-churn"))
    cases.append(
        Case("scheduler", "unipc", (("scheduler", {"plugin": "unipc", "use_karras_sigmas": True}),), "unipc-karras")
    )
    return cases


CASES: list[Case] = [
    Case("encoder", "kl-autoencoder"),
    Case("encoder", "identity", (("encoder", {"plugin": "identity"}),)),
    Case("text_embedder", "clip"),
    Case(
        "text_embedder",
        "word2vec",
        (("text_embedder", {"plugin": "word2vec", "dim": 16, "depth": 1, "heads": 2, "epochs": 2, "max_tokens": 8}),),
    ),
    Case("conditioner", "cross-attention"),
    Case(
        "conditioner",
        "cross-attention",
        (("conditioner", {"plugin": "cross-attention", "image_context_channels": 3}),),
        "cross-attention+image",
    ),
    Case("conditioner", "concat", (("conditioner", {"plugin": "concat", "channels": 3}),)),
    Case("conditioner", "vector", (("conditioner", {"plugin": "vector"}),)),
    Case("conditioner", "hybrid", (("conditioner", {"plugin": "hybrid", "channels": 2}),)),
    Case("conditioner", "none", (("conditioner", {"plugin": "none", "image_context_channels": 2}),)),
    Case("denoiser", "unet"),
    Case(
        "denoiser", "unet", (("denoiser", {**BASE["denoiser"], "head": "segment", "num_classes": 4}),), "unet-segment"
    ),
    Case(
        "denoiser", "dit", (("denoiser", {"plugin": "dit", "width": 32, "depth": 2, "heads": 4, "frequency_dim": 32}),)
    ),
    Case(
        "denoiser",
        "dit",
        (
            (
                "denoiser",
                {"plugin": "dit", "width": 32, "depth": 1, "heads": 2, "frequency_dim": 32, "pos_embed": "learned"},
            ),
            ("conditioner", {"plugin": "hybrid", "channels": 2}),
        ),
        "dit-learned-hybrid",
    ),
    *_sampler_cases(),
    # From a tiny Stable Diffusion pipeline imported with modiff-sd (needs diffusers to build it).
    Case("text_embedder", "sd-clip"),
    Case("conditioner", "sd-cross-attention"),
]
SD_CASES = {"sd-clip", "sd-cross-attention"}
#: Distributions whose components are this project's own.
BUILT_IN = {"modiff-autoencoders", "modiff-clip", "modiff-conditioners", "modiff-unet", "modiff-word2vec",
            "modiff-schedulers", "modiff-sd", "modiff-dit"}
DEVICE_ROLES = ("encoder", "text_embedder", "conditioner", "denoiser", "scheduler")


def test_every_built_in_component_has_a_case() -> None:
    """A component added to a built-in plugin must join this tier (or name where it is checked)."""
    registered = {(role, r.name) for role in DEVICE_ROLES for r in INSTALLED.all(role) if r.distribution in BUILT_IN}
    covered = {(c.role, c.name) for c in CASES}
    assert registered - covered == set(), f"add these to CASES in {__file__}: {sorted(registered - covered)}"


def _needs(case: Case) -> None:
    if case.name == "word2vec":
        pytest.importorskip("gensim", reason="word2vec needs gensim (not installed: its rows are skipped)")
    if case.name in SD_CASES:
        pytest.importorskip("diffusers", reason="the tiny SD pipeline is built with diffusers (not installed)")


def _model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for a denoiser, the same on every device."""
    return 0.5 * torch.tanh(x) + 0.01 * torch.cos(t / 100).to(x.dtype)[:, None, None, None]


def _text_input(dim: int, batch: int = 3, length: int = 6) -> TextEmbedding:
    g = torch.Generator().manual_seed(7)
    lengths = torch.tensor([length, 2, 4][:batch])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    tokens = torch.randn(batch, length, dim, generator=g) * mask[..., None]
    return TextEmbedding(tokens, mask, torch.randn(batch, dim, generator=g))


def _text_to(text: TextEmbedding, device: str) -> TextEmbedding:
    return TextEmbedding(text.tokens.to(device), text.mask.to(device), text.pooled.to(device))


def _fields(prefix: str, c: Conditioning) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in c._fields().items() if v is not None}


def component_outputs(case: Case, components: Components, module: Any, device: str) -> dict[str, torch.Tensor]:
    """The outputs of ``module`` (the case's component, on ``device``) for fixed inputs."""
    g = torch.Generator().manual_seed(3)
    ctx = components.context
    batch = 3
    if case.role == "encoder":
        images = torch.rand(batch, 3, ctx.image_size, ctx.image_size, generator=g) * 2 - 1
        latents = torch.randn(batch, ctx.latent_channels, ctx.latent_size, ctx.latent_size, generator=g)
        return {"encode": module.encode(images.to(device)), "decode": module.decode(latents.to(device))}
    if case.role == "text_embedder":
        out = module.embed(PROMPTS)
        return {"tokens": out.tokens, "mask": out.mask, "pooled": out.pooled}
    if case.role == "conditioner":
        text = _text_to(_text_input(components.text_embedder.dim), device)
        k = module.image_context_channels if hasattr(module, "image_context_channels") else 0
        image = None
        if k:
            image = torch.rand(batch, k, ctx.latent_size, ctx.latent_size, generator=g).to(device)
        return {**_fields("cond", module.condition(text, image_context=image)),
                **_fields("null", module.null(batch, like=text, image_context=image))}
    if case.role == "denoiser":
        with torch.no_grad():  # the conditioning the CPU conditioner gives, moved
            cond = components.conditioner.condition(components.text_embedder.embed(PROMPTS))
        x = torch.randn(batch, ctx.latent_channels, ctx.latent_size, ctx.latent_size, generator=g)
        t = torch.tensor([999.0, 500.5, 3.0])
        return {"prediction": module(x.to(device), t.to(device), cond.to(device))}
    if case.role == "scheduler":
        noise = torch.randn(batch, 4, 8, 8, generator=g)
        gens = modiff.generators([11, 12, 13])
        return {"sample": module.sample(_model_fn, noise.to(device), 6, generator=gens)}
    raise AssertionError(case.role)


def _component(case: Case) -> tuple[Components, Any]:
    if case.name in SD_CASES:
        components = sd_components()
        return components, components.get(case.role)
    if case.role == "scheduler":
        table = dict(dict(case.changes)["scheduler"])
        name = table.pop("plugin")
        return cpu_components("{}"), build_one("scheduler", name, table, registry_=INSTALLED)
    components = cpu_components(case.changes_json())
    return components, components.get(case.role)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_component_gives_the_cpu_outputs(case: Case, precision: str) -> None:
    _needs(case)
    components, component = _component(case)
    device_component = component
    if isinstance(component, torch.nn.Module):
        # One deep copy of the text embedder and the component, so that a conditioner that uses
        # the text embedder (sd-cross-attention's null is the empty prompt's embedding) keeps using
        # the copy on the device.
        device_text, device_component = copy.deepcopy((components.text_embedder, component))
        for module in (device_text, device_component):
            if isinstance(module, torch.nn.Module):
                module.to(DEVICE)
    with torch.inference_mode():
        reference = component_outputs(case, components, component, "cpu")
        with autocast(torch.device(DEVICE), precision):
            got = component_outputs(case, components, device_component, DEVICE)
    assert reference.keys() == got.keys()
    limit = tolerance(precision).call
    errors = {}
    for key, ref in reference.items():
        out = got[key]
        assert out.device.type == torch.device(DEVICE).type, f"{key} came back on {out.device}"
        assert out.shape == ref.shape, key
        if ref.dtype == torch.bool:
            assert torch.equal(out.cpu(), ref), f"{key} differs"
            continue
        assert bool(torch.isfinite(out).all()), f"{key} is not finite under {precision}"
        errors[key] = relative_error(ref, out)
    assert all(e <= limit for e in errors.values()), f"{case.id} under {precision}: {errors} (limit {limit})"
    assert any(float(ref.float().abs().max()) > 0 for ref in reference.values()), "all outputs are zero"


# ---------------------------------------------------------------- per-sample noise


def test_same_seed_same_initial_noise() -> None:
    shape = (8, 4, 8, 8)
    cpu = modiff.randn(shape, modiff.generators(range(100, 108)))
    dev = modiff.randn(shape, modiff.generators(range(100, 108)), device=DEVICE)
    assert dev.device.type == torch.device(DEVICE).type
    assert torch.equal(dev.cpu(), cpu)
    # ... and the pipeline's sampler starts from exactly that noise.
    cpu_pipe, dev_pipe = pipeline_pair()
    first: dict[str, torch.Tensor] = {}

    def recording(side: str) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
        def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
            def inner(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                first.setdefault(side, x.detach().cpu().clone())
                return fn(x, t)

            return inner

        return wrap

    cpu_pipe.generate_latents(PROMPTS[:2], seed=5, wrap_model=recording("cpu"))
    dev_pipe.generate_latents(PROMPTS[:2], seed=5, wrap_model=recording("device"))
    assert torch.equal(first["cpu"], first["device"])
    assert torch.equal(first["cpu"], modiff.randn(first["cpu"].shape, modiff.generators([5, 6])))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_same_seed_same_images(precision: str) -> None:
    cpu_pipe, _ = pipeline_pair()
    _, dev_pipe = pipeline_pair((f'run.precision="{precision}"',))
    reference = cpu_pipe.generate_tensor(PROMPTS, seed=3)
    got = dev_pipe.generate_tensor(PROMPTS, seed=3)
    assert float(reference.std()) > 0.05, "the images are flat: the comparison could not fail"
    error = relative_error(reference, got)
    assert error <= tolerance(precision).images, f"{precision}: images differ by {error:.2e}"
    # What the tolerance is measured against: another seed moves the images far more.
    assert relative_error(reference, cpu_pipe.generate_tensor(PROMPTS, seed=4)) > 10 * tolerance("fp32").images


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_timesteps_reach_the_denoiser_in_float32_under_autocast(precision: str) -> None:
    """Half precision cannot hold the timesteps (fp16 has 11 bits: 999.5 and 999 round alike, as do
    all neighbours above 1024 in bf16); autocast must not reach them, nor the sampler's state."""
    _, dev_pipe = pipeline_pair((f'run.precision="{precision}"',))
    seen: list[tuple[torch.dtype, torch.dtype, torch.device]] = []

    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def inner(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            seen.append((x.dtype, t.dtype, t.device))
            return fn(x, t)

        return inner

    for sampler in ("ddim", "euler", "dpmpp-2m"):
        dev_pipe.with_sampler(sampler).generate_latents(PROMPTS[:2], seed=1, steps=3, wrap_model=wrap)
    assert seen and all(x == t == torch.float32 for x, t, _ in seen), set(seen)
    assert all(device.type == torch.device(DEVICE).type for _, _, device in seen)


def test_a_prompt_alone_or_in_a_batch_of_8_gives_the_same_image() -> None:
    _, dev_pipe = pipeline_pair()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(8)]
    batch = dev_pipe.generate_tensor(prompts, seed=20)
    for i in (0, 5, 7):
        alone = dev_pipe.generate_tensor([prompts[i]], seed=20 + i)
        error = relative_error(alone[0], batch[i])
        assert error <= tolerance("fp32").images, f"image {i}: {error:.2e}"
    assert relative_error(batch[0], batch[3]) > 10 * tolerance("fp32").images, "same prompt, another seed"


# ---------------------------------------------------------------- no host waits in the sampling loop


def _device_only(event: str) -> bool:
    """True unless the code line that read the value guards it with ``device.type == "cpu"``."""
    location = event.rsplit(" at ", 1)[-1]
    path, _, line = location.rpartition(":")
    source = linecache.getline(path, int(line)) if line.isdigit() else ""
    return '.type == "cpu"' not in source


@contextmanager
def no_host_waits() -> Iterator[list[str]]:
    """On CUDA: any synchronising call raises (``torch.cuda.set_sync_debug_mode``). On a CPU:
    host reads are recorded (reads the code makes on a CPU only are left out)."""
    if torch.device(DEVICE).type == "cuda":
        before = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield []
        finally:
            torch.cuda.set_sync_debug_mode(before)
        return
    with host_syncs(factories=False) as events:
        found: list[str] = []
        yield found
    found.extend(e for e in events if _device_only(e))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "euler-ancestral", "dpmpp-2m-sde", "heun", "lcm"])
def test_sampling_loop_never_waits_for_the_device(sampler: str) -> None:
    """From the second model call on, nothing in a step makes the host wait: no value read back,
    no copy from pageable memory (the stochastic samplers' noise comes through pinned memory)."""
    _, dev_pipe = pipeline_pair()
    dev_pipe = dev_pipe.with_sampler(sampler)
    dev_pipe.generate_latents(PROMPTS, seed=0, steps=3)  # warm up (kernels, allocator, autotuning)
    found: list[str] = []
    with ExitStack() as stack:

        def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
            calls = {"n": 0}

            def inner(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                calls["n"] += 1
                if calls["n"] == 2:  # the loop is running: from here on, nothing may wait
                    found_now = stack.enter_context(no_host_waits())
                    stack.callback(lambda: found.extend(found_now))
                return fn(x, t)

            return inner

        latents = dev_pipe.generate_latents(PROMPTS, seed=0, steps=5, wrap_model=wrap)
        stack.close()
    assert not found, found
    assert latents.shape[0] == len(PROMPTS)


# ---------------------------------------------------------------- training on the device

#: A tiny run with a dataset, for training: every stage (autoencoder, CLIP, denoiser) on the device.
TRAIN: dict[str, Any] = {
    "run": {"name": "tiny", "device": DEVICE},
    "data": {"plugin": "shapes", "image_size": 24, "size": 64, "max_objects": 1},
    "train": {
        "steps": 24, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "ema_decay": 0.9, "condition_dropout": 0.25,
        "checkpoint_every": 12, "log_every": 1,
        "encoder": {"steps": 4, "batch_size": 8, "warmup_steps": 1},
        "text_embedder": {"steps": 4, "batch_size": 8, "warmup_steps": 1},
    },
    "sample": {"steps": 3, "guidance": 2.0, "prompts": ["a red circle"]},
}

VARIANTS: dict[str, tuple[str, ...]] = {
    "plain": (),
    "bf16": ('run.precision="bf16"',),
    "fp16-gradscaler": ('run.precision="fp16"',),
    "channels_last": ("run.channels_last=true",),
    "compile": ("run.compile=true",),
}


def train_settings(runs: Path, device: str, sets: tuple[str, ...] = (), steps: int | None = None) -> Any:
    changes = copy.deepcopy(TRAIN)
    changes["run"] = {**BASE["run"], **changes["run"], "runs_dir": str(runs), "device": device}
    changes["run"].pop("image_size")
    if steps is not None:
        changes["train"]["steps"] = steps
    return settings(changes, sets)


def train(
    run: RunDir, resolved: Any, *, interrupt_at: int | None = None, resume: bool = False, strict: bool = False
) -> None:
    """Train ``run``; with ``interrupt_at``, stop with Ctrl-C during that denoiser step (1-based).

    ``strict``: torch's deterministic algorithms without exceptions (an operation that has no
    deterministic kernel raises, naming itself). ``[run] deterministic = true`` asks for them with
    ``warn_only=True``, which on CUDA leaves SDPA's memory-efficient backward non-deterministic.

    The sample grid a run writes at its end is left out: it is generation, checked above, and with
    ``compile`` it would compile the denoiser once more for the sampling batch (the GPU check's time
    is short)."""
    from modiff import grids, training
    from modiff.workflows import train_run

    real = training.DenoiserLoss.__call__
    calls = {"n": 0}

    def interrupting(self: Any, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return real(self, *args)

    training.DenoiserLoss.__call__ = interrupting  # type: ignore[method-assign]
    write_grid = getattr(grids, "write_grid", None)
    if write_grid is not None:  # (if it is renamed, the grids are written: slower, still right)
        grids.write_grid = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        if strict:
            torch.use_deterministic_algorithms(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deterministic-mode notices, tokenizer chatter
            train_run(resolved, run, resume=resume, progress=False)
    finally:
        training.DenoiserLoss.__call__ = real  # type: ignore[method-assign]
        if write_grid is not None:
            grids.write_grid = write_grid  # type: ignore[assignment]
        torch.use_deterministic_algorithms(False)


def denoiser_losses(run: RunDir) -> list[float]:
    return [m["loss"] for m in run.read_metrics() if m["stage"] == "denoiser"]


def component_weights(run: RunDir) -> dict[str, dict[str, torch.Tensor]]:
    """Every component's weights in the run's committed checkpoint, by role."""
    from safetensors.torch import load_file

    out = {}
    for role in ("encoder", "text_embedder", "conditioner", "denoiser"):
        path = run.weights(role)
        if path.is_file():
            out[role] = load_file(str(path))
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_lowers_the_loss_and_resumes_bit_identically(variant: str, tmp_path: Path) -> None:
    """Every stage on the device; under torch's strict deterministic mode, so that a difference
    between the resumed and the uninterrupted run is the resume's (checkpoint, random state,
    optimizer, EMA, gradient scaler), not a kernel's."""
    if variant == "compile" and ON_CPU and not os.environ.get("MODIFF_CHECK_CPU_COMPILE"):
        pytest.skip("compiling on a CPU takes minutes (MODIFF_CHECK_CPU_COMPILE=1 runs it); "
                    "tests/unit/test_fast_paths.py checks compiled generation on the CPU")
    if variant == "compile":
        torch._dynamo.reset()
    sets = VARIANTS[variant]
    full = RunDir(tmp_path / "full")
    train(full, train_settings(tmp_path, DEVICE, sets), strict=True)
    losses = denoiser_losses(full)
    assert len(losses) == TRAIN["train"]["steps"] and all(math.isfinite(v) for v in losses), losses
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    assert last < 0.9 * first, f"{variant}: the denoiser loss did not fall ({first:.4f} -> {last:.4f})"

    cut = RunDir(tmp_path / "cut")
    resolved = train_settings(tmp_path, DEVICE, sets)
    from modiff.training import TrainingInterrupted

    with pytest.raises(TrainingInterrupted, match="checkpoint saved"):
        train(cut, resolved, interrupt_at=14, strict=True)
    assert cut.read_state()["step"] == 13
    train(cut, resolved, resume=True, strict=True)
    a, b = component_weights(full), component_weights(cut)
    assert a.keys() == b.keys() and {"denoiser", "conditioner"} <= set(a)
    differing = [(role, k) for role in a for k in a[role] if not torch.equal(a[role][k], b[role][k])]
    if differing:
        again = RunDir(tmp_path / "again")
        train(again, train_settings(tmp_path, DEVICE, sets), strict=True)
        c = component_weights(again)
        repeatable = all(torch.equal(a[r][k], c[r][k]) for r in a for k in a[r])
        pytest.fail(
            f"{variant}: the resumed run differs from the uninterrupted one in {len(differing)} tensors "
            f"(first {differing[:3]}); two uninterrupted runs "
            f"{'agree' if repeatable else 'differ too: the kernels are not deterministic'}"
        )
    assert denoiser_losses(cut) == losses, "the resumed run logs the uninterrupted run's losses"


def test_the_deterministic_setting_makes_training_repeatable(tmp_path: Path) -> None:
    """``[run] deterministic = true`` alone (no strict mode from the test): two runs of the same
    settings end with the same weights, bit for bit, as the run directories' resume promise needs."""
    runs = []
    for name in ("first", "second"):
        run = RunDir(tmp_path / name)
        train(run, train_settings(tmp_path, DEVICE, ("run.deterministic=true",), steps=8))
        runs.append(component_weights(run))
    differing = [(r, k) for r in runs[0] for k in runs[0][r] if not torch.equal(runs[0][r][k], runs[1][r][k])]
    assert not differing, (
        f"two runs with [run] deterministic = true differ in {len(differing)} tensors (first {differing[:3]}): "
        "torch.use_deterministic_algorithms(True, warn_only=True) leaves some kernels non-deterministic"
    )


# ---------------------------------------------------------------- runs move between devices


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunDir]:
    """One tiny run trained on the CPU and one on the device (same settings, 8 steps)."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for where, device in (("cpu", "cpu"), ("device", DEVICE)):
        run = RunDir(root / where)
        resolved = train_settings(root, device, (f'run.name="{where}"',), steps=8)
        train(run, resolved)
        runs[where] = run
    return runs


@pytest.mark.parametrize("trained_on, loaded_on", [("cpu", "device"), ("device", "cpu")])
def test_a_run_trained_on_one_device_generates_on_the_other(
    trained_runs: dict[str, RunDir], trained_on: str, loaded_on: str
) -> None:
    run = trained_runs[trained_on]
    home = Pipeline.load(run.path, device="cpu" if trained_on == "cpu" else DEVICE)
    away = Pipeline.load(run.path, device=DEVICE if loaded_on == "device" else "cpu")
    assert away.device.type == torch.device(DEVICE if loaded_on == "device" else "cpu").type
    for _, module in away.components.modules():
        assert all(p.device.type == away.device.type for p in module.parameters())
    reference = home.generate_tensor(PROMPTS, seed=9)
    got = away.generate_tensor(PROMPTS, seed=9)
    assert float(reference.std()) > 0.01
    error = relative_error(reference, got)
    assert error <= tolerance("fp32").images, f"{trained_on} -> {loaded_on}: images differ by {error:.2e}"


# ---------------------------------------------------------------- Stable Diffusion 1.x import


@functools.cache
def sd_tiny() -> tuple[Any, Path, Any]:
    """``(diffusers pipeline, imported run, _sd_tiny)``: modiff-sd's tiny SD 1.x pipeline (random, perturbed
    weights, built offline with diffusers), written with save_pretrained and imported with ``import_sd``."""
    import atexit
    import shutil
    import sys
    import tempfile

    folder = str(Path(__file__).resolve().parents[2] / "plugins" / "sd" / "tests")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import _sd_tiny
    from modiff_sd.importer import import_sd

    _sd_tiny.quiet_libraries()
    pipe = _sd_tiny.make_pipeline()
    root = Path(tempfile.mkdtemp(prefix="modiff-cuda-tier-sd-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    pipe.save_pretrained(str(root / "diffusers"))
    import_sd(root / "diffusers", root / "run")
    return pipe, root / "run", _sd_tiny


@functools.cache
def sd_components() -> Components:
    """The imported tiny SD run's components on the CPU."""
    return Pipeline.load(sd_tiny()[1], device="cpu").components


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_sd_import_gives_diffusers_images(precision: str) -> None:
    """The imported SD 1.x weights, on the device under ``precision``, against diffusers' fp32
    images on the same device: same prompts, seed, initial noise, sampler and guidance."""
    pytest.importorskip("diffusers", reason="diffusers is the reference (not installed)")
    pipe, run, tiny = sd_tiny()
    prompts, steps, guidance = [tiny.CAPTIONS[0], tiny.CAPTIONS[2]], 4, 7.5
    reference_pipe = copy.deepcopy(pipe).to(DEVICE)
    reference = tiny.reference_images(reference_pipe, prompts, seed=3, steps=steps, guidance=guidance).float().cpu()
    ours = Pipeline.load(run, device=DEVICE, sets=[f'run.precision="{precision}"'])
    images = tiny.modiff_images(ours, prompts, 3, steps, guidance)
    error = relative_error(reference, images)
    limit = tolerance(precision).images
    detail = ""
    if precision == "fp16" and torch.device(DEVICE).type == "cuda":  # what diffusers itself gives in fp16
        half = copy.deepcopy(pipe).to(DEVICE, torch.float16)
        gens = modiff.generators([3, 4])
        latents = modiff.randn((2, 4, tiny.LATENT, tiny.LATENT), gens).to(DEVICE, torch.float16)
        with torch.no_grad():
            theirs = half(prompts, latents=latents, num_inference_steps=steps, guidance_scale=guidance,
                          output_type="pt").images
        detail = f"; diffusers' own fp16 images differ from its fp32 ones by {relative_error(reference, theirs):.2e}"
    assert error <= limit, f"{precision}: modiff's images differ from diffusers' by {error:.2e} (limit {limit}){detail}"
    # The comparison can fail: another seed moves the images far beyond the limit.
    other_seed = tiny.reference_images(reference_pipe, prompts, seed=4, steps=steps, guidance=guidance)
    assert relative_error(reference, other_seed) > 3 * limit
