"""Choosing a device and a precision, correct on CPU and CUDA alike."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import ModiffError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(
    name: str | torch.device = "auto", *, source: str = "[run] device", allow_meta: bool = False
) -> torch.device:
    """The device ``name`` names, checked against this machine.

    ``auto`` picks CUDA when present (the current rank's device under
    torchrun), else the CPU. Anything else must be a device this machine has:
    ``cpu``, ``cuda``, ``cuda:N`` (N below the number of CUDA devices) or
    ``mps`` where available. A value that names no device, or a device the
    machine lacks, is a :class:`ModiffError` naming ``source`` (the settings
    key or command-line option the value came from), the value and what is
    allowed here. ``meta`` (shapes, no data) is for code that inspects a
    model's parameters (``allow_meta``), never a user's choice: nothing can be
    trained or generated on it.
    """
    if isinstance(name, torch.device):
        return name
    key = str(name).strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    allowed = _allowed()
    if key == "meta":  # shapes only, no memory: how plugins inspect a model's parameters
        if allow_meta:
            return torch.device("meta")
        raise ModiffError(f"{source} = {name!r} holds shapes but no data: nothing can run on it; use {allowed}")
    try:
        device = torch.device(key)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in {"cpu", "cuda", "mps"} or (device.index is not None and device.index < 0):
        raise ModiffError(f"{source} = {name!r} is not a device; use {allowed}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this build of torch has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
            )
            raise ModiffError(f"{source} = {name!r}, but {why} here; use {allowed}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ModiffError(
                f"{source} = {name!r}, but this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
                f"use {allowed}"
            )
    if device.type == "mps" and not _mps_available():
        raise ModiffError(f"{source} = {name!r}, but MPS (Apple GPUs) is not available here; use {allowed}")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _allowed() -> str:
    """The device names this machine accepts, for error messages."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names += ["cuda"] + [f"cuda:{i}" for i in range(min(count, 4))] + (["..."] if count > 4 else [])
    if _mps_available():
        names.append("mps")
    if len(names) == 2:
        return "auto or cpu (cuda and cuda:N need a CUDA device)"
    return ", ".join(names)


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
