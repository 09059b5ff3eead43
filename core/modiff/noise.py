"""Random draws that do not depend on the batch a sample is in.

A sampler that draws ``randn(B, ...)`` from one generator gives image ``i`` a
different noise depending on ``B``; here a sequence of generators gives every
sample its own stream, so image ``i`` of a batch is bit-identical to the same
seed generated alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per seed, on ``device``."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


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
        return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"got {len(gens)} generators for a batch of {shape[0]}")
    rows = [torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype) for g in gens]
    return torch.stack(rows).to(device)


def randn_like(x: torch.Tensor, generator: GeneratorArg = None) -> torch.Tensor:
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)
