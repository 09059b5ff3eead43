"""Random draws that do not depend on the batch a sample is in.

A sampler that draws ``randn(B, ...)`` from one generator gives image ``i`` a
different noise depending on ``B``; here a sequence of generators gives every
sample its own stream, so image ``i`` of a batch is bit-identical to the same
seed generated alone.

The generators live on the CPU, so a seed gives the same numbers on every
device; the draws are then copied to the device with :func:`to_device`, which
does not make the host wait for the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per seed, on ``device``."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``, copied without making the host wait when it goes
    from the CPU to a CUDA device.

    ``tensor.to("cuda")`` from ordinary (pageable) memory returns only once the
    copy has run, i.e. after all the work queued on the GPU before it: inside a
    sampling or training loop the CPU then stops queueing kernels ahead of the
    GPU at every step. A copy from page-locked memory with ``non_blocking=True``
    is queued like a kernel instead; torch's pinned-memory allocator keeps the
    staging block alive until the copy has run, so ``tensor`` may be freed or
    changed at once.
    """
    target = torch.device(device)
    if tensor.device.type == "cpu" and target.type == "cuda":
        return tensor.pin_memory().to(target, non_blocking=True)
    return tensor.to(target)


def randn(
    shape: Sequence[int],
    generator: GeneratorArg = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape``; a list of generators draws row ``i``
    from ``generator[i]`` (its length must equal ``shape[0]``).

    Draws happen on the generator's device and are then moved, so CPU
    generators give the same numbers whatever ``device`` is.
    """
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return to_device(torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype), device)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"got {len(gens)} generators for a batch of {shape[0]}")
    rows = [torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype) for g in gens]
    return to_device(torch.stack(rows), device)


def randn_like(x: torch.Tensor, generator: GeneratorArg = None) -> torch.Tensor:
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)
