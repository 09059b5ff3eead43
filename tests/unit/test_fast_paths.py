"""Each fast path is a setting, and each gives the plain path's samples within tolerance.

The pipelines here are made of the real built-in components (kl-autoencoder,
clip, cross-attention, unet, ddim) at a tiny size, untrained but with every
weight perturbed, so that no output is trivially zero and a fast path that
computed something else would show. Two pipelines compared in a test share
their weights (copied state dicts).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

import modiff
from modiff.assembly import build
from modiff.pipeline import Pipeline
from modiff.settings import load
from modiff.testing import build_one, plugin_registry

#: The installed plugins, whatever registry another test module left in place.
INSTALLED = plugin_registry(entry_points=True)

TINY: dict[str, Any] = {
    "run": {"image_size": 16, "device": "cpu"},
    "encoder": {"plugin": "kl-autoencoder", "channels": [8, 8], "norm_num_groups": 4},
    "text_embedder": {
        "plugin": "clip", "width": 16, "heads": 2, "layers": 1, "vision_width": 16, "vision_heads": 2,
        "vision_layers": 1, "projection_dim": 16, "max_tokens": 16,
    },
    "conditioner": {"plugin": "cross-attention"},
    "denoiser": {
        "plugin": "unet", "channels": [16, 32], "layers_per_block": 1, "attention_levels": [1], "norm_num_groups": 8,
        "head_dim": 8,
    },
    "scheduler": {"plugin": "ddim"},
    "sample": {"steps": 3, "guidance": 3.0},
}
PROMPTS = ["a red circle", "a blue square"]


def pipeline(*sets: str, like: Pipeline | None = None) -> Pipeline:
    """The tiny pipeline with ``sets`` applied; with ``like``, its weights are ``like``'s."""
    torch.manual_seed(0)
    pipe = Pipeline(build(load(base=TINY, sets=list(sets), environ={}, registry=INSTALLED), device="cpu"))
    modules = dict(pipe.components.modules())
    if like is not None:
        for role, module in like.components.modules():
            modules[role].load_state_dict(module.state_dict())
        return pipe
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in modules.values():
            for p in module.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return pipe


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """These models are far too small to gain from threads, and on a loaded
    machine OpenMP's waiting made each generation 100x slower with two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def plain(one_thread: None) -> Pipeline:
    return pipeline()


def images(pipe: Pipeline, **kwargs: Any) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prompts longer than the tiny tokenizer's limit
        return pipe.generate_tensor(PROMPTS, seed=kwargs.pop("seed", 3), **kwargs)


@contextmanager
def denoiser_calls(pipe: Pipeline) -> Iterator[list[dict[str, Any]]]:
    """What every call of the denoiser saw: batch, grad and inference mode, autocast."""
    calls: list[dict[str, Any]] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        calls.append({
            "batch": args[0].shape[0],
            "inference": torch.is_inference_mode_enabled(),
            "grad": torch.is_grad_enabled(),
        })

    handle = pipe.components.denoiser.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def test_the_plain_images_depend_on_seed_and_guidance(plain: Pipeline) -> None:
    """What makes the comparisons below able to fail: every input moves the images."""
    base = images(plain)
    assert base.shape == (2, 3, 16, 16) and float(base.std()) > 0.05
    assert float((images(plain, seed=4) - base).abs().max()) > 1e-2
    assert float((images(plain, guidance=1.0) - base).abs().max()) > 1e-2


def test_channels_last(plain: Pipeline) -> None:
    fast = pipeline("run.channels_last=true", like=plain)
    weight = next(m.weight for m in fast.components.denoiser.modules() if isinstance(m, torch.nn.Conv2d))
    assert weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(images(fast), images(plain), rtol=0, atol=1e-5)


def test_batched_and_separate_guidance_give_the_same_samples(plain: Pipeline) -> None:
    separate = pipeline("sample.batch_guidance=false", like=plain)
    with denoiser_calls(plain) as batched_calls:
        together = images(plain)
    with denoiser_calls(separate) as separate_calls:
        apart = images(separate)
    steps = TINY["sample"]["steps"]
    assert [c["batch"] for c in batched_calls] == [4] * steps, "one call of 2B per step"
    assert [c["batch"] for c in separate_calls] == [2] * (2 * steps), "two calls of B per step"
    torch.testing.assert_close(apart, together, rtol=0, atol=1e-5)


def test_setting_batch_guidance_is_documented() -> None:
    from modiff.settings import SampleSettings

    assert SampleSettings().batch_guidance is True
    assert SampleSettings.model_fields["batch_guidance"].description


def test_sampling_runs_in_inference_mode(plain: Pipeline) -> None:
    with denoiser_calls(plain) as calls:
        latents = plain.generate_latents(["a red circle"], seed=0)
    assert calls and all(c["inference"] and not c["grad"] for c in calls)
    assert latents.is_inference() and not latents.requires_grad


def test_bf16_autocast_runs_the_matmuls_in_bf16_and_stays_close(plain: Pipeline) -> None:
    fast = pipeline("run.precision=\"bf16\"", like=plain)
    dtypes: dict[str, set[torch.dtype]] = {"linear": set(), "conv": set()}

    def hook(kind: str) -> Callable[..., None]:
        return lambda module, args, output: dtypes[kind].add(output.dtype)

    handles = [
        m.register_forward_hook(hook("linear" if isinstance(m, torch.nn.Linear) else "conv"))
        for m in fast.components.denoiser.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
    ]
    try:
        low = images(fast)
    finally:
        for h in handles:
            h.remove()
    assert dtypes == {"linear": {torch.bfloat16}, "conv": {torch.bfloat16}}
    assert low.dtype == torch.float32
    full = images(plain)
    difference = float((low - full).abs().max())
    assert 0 < difference < 0.05, f"bf16 samples differ from fp32 by {difference}"


def _c_compiler() -> str | None:
    return next((c for c in ("cc", "gcc", "clang", "c++", "g++") if shutil.which(c)), None)


@pytest.mark.skipif(_c_compiler() is None, reason="torch.compile's default backend needs a C compiler on CPU")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*")
@pytest.mark.slow  # inductor compiles C++ in subprocesses
def test_compile(plain: Pipeline) -> None:
    """Slow for a unit test: compiling the tiny UNet takes about 40 s on a 2-core CPU (inductor and gcc)."""
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    fast = pipeline("run.compile=true", like=plain)
    assert hasattr(fast.components.denoiser.forward, "_torchdynamo_orig_callable"), "forward is not compiled"
    got = images(fast)
    assert counters["stats"]["unique_graphs"] > 0, "nothing was compiled"
    torch.testing.assert_close(got, images(plain), rtol=0, atol=1e-4)
    # The state dict is unchanged by compiling: checkpoints keep their format.
    assert fast.components.denoiser.state_dict().keys() == plain.components.denoiser.state_dict().keys()
    torch._dynamo.reset()


# -------------------------------------------------------------- no per-step synchronisation

#: Tensor methods that read a value back to the host (a device synchronisation on GPUs).
HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


def _built_in_samplers() -> list[str]:
    return sorted(
        reg.name for reg in INSTALLED.all("scheduler") if reg.distribution == "modiff-schedulers"
    )


@pytest.mark.parametrize("name", _built_in_samplers())
def test_sampling_loop_never_reads_back_or_allocates_timesteps(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the first model call on (the loop), no tensor value goes back to the host and
    no timestep tensor is made: they were all put on the device before the loop."""
    scheduler = build_one("scheduler", name, {}, registry_=INSTALLED)
    seen: list[torch.Tensor] = []
    armed = False

    def refuse(what: str) -> Callable[..., Any]:
        def raiser(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"{name}: {what} inside the sampling loop")

        return raiser

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        nonlocal armed
        if not armed:  # the loop has begun: arm the traps
            armed = True
            for method in HOST_READS:
                monkeypatch.setattr(torch.Tensor, method, refuse(f"Tensor.{method}"))
            monkeypatch.setattr(torch, "full", refuse("torch.full"))
            monkeypatch.setattr(torch, "tensor", refuse("torch.tensor"))
        seen.append(t)
        return 0.1 * x + 1e-4 * t[:, None, None, None]

    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    gens = modiff.generators([0, 1])
    try:
        out = scheduler.sample(model_fn, noise, 6, generator=gens)
    finally:
        monkeypatch.undo()
    assert armed and bool(torch.isfinite(out).all())
    expected = scheduler.timesteps(6).to(torch.float32).tolist()
    got = [float(t[0]) for t in seen]
    if name == "heun":  # two model calls per step, at both ends; both ends are grid timesteps
        assert set(got) == set(expected)
    else:
        assert got == expected
