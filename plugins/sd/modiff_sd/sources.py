"""Reading weights one tensor at a time, without a second copy in memory.

safetensors files are memory-mapped (``safe_open``): a tensor is read when
asked for and cast to the wanted dtype right away, so importing a model
holds at most one component's tensors, already in the run's precision.
Pickled checkpoints (``.ckpt``, ``.bin``, ...) are read only through
``torch.load(weights_only=True)``, which unpickles tensors and plain
containers and refuses any other object; a file that needs more is refused
with a message, never unpickled.

Every problem is a :class:`modiff.WeightsError` naming the file and, where
there is one, the tensor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import torch

import modiff

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class TensorFile(Protocol):
    path: Path

    def keys(self) -> list[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def read(self, key: str) -> torch.Tensor: ...


class SafetensorsFile:
    """A memory-mapped safetensors file; the header is checked when opened."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise modiff.WeightsError(f"weights file {self.path} does not exist")
        try:
            self._fh = safe_open(str(self.path), framework="pt", device="cpu")
            self._keys = list(self._fh.keys())
        except Exception as exc:  # SafetensorError, OSError, ...: the header or the size is wrong
            raise modiff.WeightsError(
                f"{self.path} is not a readable safetensors file ({exc}); it may be truncated or corrupt"
            ) from None

    def keys(self) -> list[str]:
        return list(self._keys)

    def metadata(self) -> dict[str, str]:
        return dict(self._fh.metadata() or {})

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._fh.get_slice(key).get_shape())

    def read(self, key: str) -> torch.Tensor:
        try:
            return self._fh.get_tensor(key)
        except Exception as exc:
            raise modiff.WeightsError(
                f"tensor {key!r} in {self.path} cannot be read ({exc}); the file may be corrupt"
            ) from None


class PickleFile:
    """A pickled checkpoint read with weights-only loading (memory-mapped when possible)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise modiff.WeightsError(f"weights file {self.path} does not exist")
        obj = self._load()
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            raise modiff.WeightsError(f"{self.path} holds a {type(obj).__name__}, not a dictionary of tensors")
        self._tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
        if not self._tensors:
            raise modiff.WeightsError(f"{self.path} holds no tensors (looked at the top level and at 'state_dict')")

    def _load(self) -> object:
        try:
            try:
                return torch.load(str(self.path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                # Files in torch's legacy (pre-zip) format cannot be memory-mapped.
                return torch.load(str(self.path), map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise modiff.WeightsError(
                f"{self.path} could not be read with weights-only loading ({reason}). modiff never unpickles "
                "arbitrary objects, because a pickle can run any code: use the model's .safetensors release, or "
                "convert this file to safetensors on a machine and with a tool you trust"
            ) from None

    def keys(self) -> list[str]:
        return list(self._tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._tensors[key].shape)

    def read(self, key: str) -> torch.Tensor:
        return self._tensors[key]


class Weights:
    """Named tensors spread over one or more files, read one at a time.

    ``get`` casts floating tensors to ``dtype`` as they are read (``None``
    keeps the stored dtype) and checks they are finite: random bytes in a
    damaged file show up as NaN or infinities far more often than as
    plausible numbers.
    """

    def __init__(self, files: Sequence[TensorFile], dtype: torch.dtype | None = torch.float32):
        self.files = list(files)
        self.dtype = dtype
        self._where: dict[str, TensorFile] = {}
        for f in self.files:
            for key in f.keys():
                if key in self._where:
                    raise modiff.WeightsError(f"tensor {key!r} is in both {self._where[key].path} and {f.path}")
                self._where[key] = f

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def file_of(self, key: str) -> Path:
        return self._where[key].path

    def shape(self, key: str) -> tuple[int, ...]:
        return self._where[key].shape(key)

    def get(self, key: str) -> torch.Tensor:
        f = self._where[key]
        tensor = f.read(key)
        if tensor.is_floating_point():
            if self.dtype is not None:
                tensor = tensor.to(self.dtype)
            if not _finite(tensor):
                raise modiff.WeightsError(
                    f"tensor {key!r} in {f.path} holds NaN or infinite values; the file is corrupt"
                )
        return tensor

    def describe(self) -> str:
        return ", ".join(str(f.path) for f in self.files)


def _finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite. A float32 sum is one fast pass (any NaN or
    infinity makes it non-finite); only if it is not finite, which finite values
    could also cause by overflowing, is every value checked."""
    total = tensor.sum(dtype=torch.float32) if tensor.dtype != torch.float64 else tensor.sum()
    return bool(torch.isfinite(total)) or bool(torch.isfinite(tensor).all())


def open_file(path: Path) -> TensorFile:
    """One weights file, by its suffix."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(SAFETENSORS_SUFFIX):
        return SafetensorsFile(path)
    if name.endswith(PICKLE_SUFFIXES):
        return PickleFile(path)
    raise modiff.WeightsError(
        f"{path} is neither a .safetensors file nor a weights-only checkpoint ({', '.join(PICKLE_SUFFIXES)})"
    )


def open_weights(path: Path, dtype: torch.dtype | None = torch.float32) -> Weights:
    """A weights file, or a sharded set through its ``*.index.json``."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        return Weights(list(_shards(path)), dtype)
    return Weights([open_file(path)], dtype)


def _shards(index: Path) -> Iterator[TensorFile]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise modiff.WeightsError(f"{index} is not a readable shard index ({exc})") from None
    for name in sorted(set(weight_map.values())):
        yield open_file(index.parent / name)


#: Weight file names diffusers and transformers write, in order of preference.
WEIGHT_STEMS = ("diffusion_pytorch_model", "model")
WEIGHT_PATTERNS = (
    "{}.safetensors",
    "{}.safetensors.index.json",
    "{}.fp16.safetensors",
    "{}.fp16.safetensors.index.json",
    "{}.bin",
    "{}.bin.index.json",
)


def component_weights(folder: Path, dtype: torch.dtype | None = torch.float32) -> Weights:
    """The weights of one diffusers component folder (``unet/``, ``vae/``, ...).

    safetensors first (single, sharded, then the ``fp16`` variant), then
    pickled ``.bin`` files through weights-only loading.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise modiff.WeightsError(f"{folder} is missing: a diffusers folder needs this component")
    for pattern in WEIGHT_PATTERNS:
        for stem in WEIGHT_STEMS:
            candidate = folder / pattern.format(stem)
            if candidate.is_file():
                return open_weights(candidate, dtype)
    present = sorted(p.name for p in folder.iterdir())
    raise modiff.WeightsError(
        f"no weights in {folder} (looked for {WEIGHT_STEMS[0]}.safetensors or {WEIGHT_STEMS[1]}.safetensors, their "
        f"sharded and fp16 variants, and .bin files); it holds: {', '.join(present) or 'nothing'}"
    )
