"""Choosing a device and a precision, correct on CPU and CUDA alike."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import ModiffError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present (the current rank's device under
    torchrun), else the CPU; ``cuda`` without CUDA is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ModiffError(f"[run] device = {name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModiffError(f"[run] device = {name!r} but CUDA is not available here; use device = \"auto\" or \"cpu\"")
    return device


def autocast_dtype(precision: str) -> torch.dtype:
    return _DTYPES[precision]


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for ``precision`` on ``device``; fp32 is a no-op.

    fp16 is only meaningful on CUDA; on a CPU it falls back to bf16, the
    half type CPUs implement.
    """
    if precision == "fp32":
        yield
        return
    dtype = _DTYPES[precision]
    if device.type == "cpu" and dtype is torch.float16:
        dtype = torch.bfloat16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
