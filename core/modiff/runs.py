"""Run directories: where a trained pipeline lives, written so nothing is ever half-written.

Layout of ``runs/<name>/``::

    settings.toml                 the resolved settings, every default filled in
    state.json                    stages finished, last checkpointed step
    components/<role>.safetensors weights for inference (EMA where kept), with the
                                  plugin's name, distribution, version and settings
                                  in the file's metadata
    components/<role>/            non-tensor assets (vocabularies, tokenizers)
    checkpoint/trainer.safetensors raw weights and optimizer state, for resume
    checkpoint/trainer.json       step and scalars of the optimizer state
    metrics.jsonl                 one JSON object per logged step
    samples/                      sample grids and trajectories

Every file is written to a temporary name in the same directory, flushed,
fsynced and renamed over the old one, so a run killed at any instant keeps
either the old or the new file, never a torn one. Weights are only read from
safetensors; pickle is never unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from .errors import RunError, WeightsError

FORMAT = "modiff/1"


@contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, str]]:
    """The one rename protocol every atomic write here uses: a temporary file
    beside ``path`` (its open descriptor and its name) that, once the body has
    written and synced it, is renamed over ``path`` (and the directory synced);
    on any failure it is removed and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        yield fd, tmp
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


@contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path``."""
    with _replacing(path) as (fd, _), os.fdopen(fd, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _suppress() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors ``save_file`` made atomic (written beside, then renamed)."""
    with _replacing(path) as (fd, tmp):
        os.close(fd)  # safetensors writes by name
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(contiguous, tmp, metadata=metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())


def atomic_copy_dir(source: Path, target: Path) -> None:
    """Replace directory ``target`` by a copy of ``source`` (rename-swap)."""
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def read_tensors(path: Path, *, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; any damage is a :class:`WeightsError`
    naming the file."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            metadata = dict(fh.metadata() or {})
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated or corrupt. "
            "Delete it and resume from an earlier checkpoint, or retrain."
        ) from None
    return tensors, metadata


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    path: Path

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> RunDir:
        return cls(Path(path))

    @property
    def settings(self) -> Path:
        return self.path / "settings.toml"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def components(self) -> Path:
        return self.path / "components"

    def weights(self, role: str) -> Path:
        return self.components / f"{role}.safetensors"

    def assets(self, role: str) -> Path:
        return self.components / role

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    def exists(self) -> bool:
        return self.settings.is_file()

    def require(self) -> None:
        if not self.path.is_dir():
            raise RunError(f"run directory {self.path} does not exist; train one with `modiff train SETTINGS`")
        if not self.settings.is_file():
            raise RunError(f"{self.path} is not a modiff run: it has no settings.toml")

    def read_state(self) -> dict[str, Any]:
        if not self.state_file.is_file():
            return {"format": FORMAT, "stages_done": [], "step": 0}
        try:
            return json.loads(self.state_file.read_text())
        except (json.JSONDecodeError, OSError) as exc:
            raise RunError(f"{self.state_file} is unreadable ({exc})") from None

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.state_file, {"format": FORMAT, **state})

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one line; lines past the last checkpoint are dropped on resume."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill
                continue
        return out

    def truncate_metrics(self, stage: str, step: int) -> None:
        """Keep only records up to ``step`` of ``stage`` (and every other stage's)."""
        kept = [r for r in self.read_metrics() if r.get("stage") != stage or int(r.get("step", 0)) <= step]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))


def component_metadata(role: str, registration: Any, params: Any) -> dict[str, str]:
    return {
        "format": FORMAT,
        "role": role,
        "plugin": registration.name,
        "distribution": registration.distribution,
        "version": registration.version,
        "settings": json.dumps(params.model_dump(mode="json"), sort_keys=True),
    }


def save_component(run: RunDir, role: str, module: torch.nn.Module, registration: Any, params: Any,
                   state: dict[str, torch.Tensor] | None = None) -> None:
    """Write a component's weights (``state`` or its own state dict) and assets."""
    save_assets = getattr(module, "save_assets", None)
    if callable(save_assets):
        tmp = run.components / f".{role}.assets-tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_assets(tmp)
        atomic_copy_dir(tmp, run.assets(role))
        shutil.rmtree(tmp)
    tensors = state if state is not None else module.state_dict()
    atomic_save_tensors(run.weights(role), _unshare(tensors), component_metadata(role, registration, params))


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): copy duplicates."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, v in tensors.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else (id(v), 0)
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out


def load_component(run: RunDir, role: str, module: torch.nn.Module, registration: Any) -> None:
    """Restore a component's assets and weights, checking the file belongs to it."""
    assets = run.assets(role)
    load_assets = getattr(module, "load_assets", None)
    if callable(load_assets) and assets.is_dir():
        load_assets(assets)
    path = run.weights(role)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    tensors, metadata = read_tensors(path, device=device)
    plugin = metadata.get("plugin")
    if metadata.get("format") != FORMAT or plugin is None:
        raise WeightsError(f"{path} was not written by modiff (no modiff metadata); it cannot be restored as the {role}")
    if plugin != registration.name:
        raise WeightsError(
            f"{path} holds a {role} of plugin {plugin!r} ({metadata.get('distribution')}), "
            f"but the settings ask for {registration.name!r}"
        )
    load_state(module, tensors, path)


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)`` with an error naming the file and the tensor."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise WeightsError(f"{path} does not fit the model: {'; '.join(parts)}")
    for name, value in tensors.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise WeightsError(
                f"{path}: tensor {name!r} has shape {tuple(value.shape)} but the model expects "
                f"{tuple(expected[name].shape)}; the settings differ from the ones the file was trained with"
            )
    module.load_state_dict(tensors, strict=True)
