"""Durable writes: a file is either the old one or the new one, never torn.

Every write goes to a temporary file beside its target, is flushed and
fsynced, and is renamed over the target (then the directory is fsynced), so a
process killed at any instant leaves the old file or the new one. A write the
file system refuses (disk full, read-only, no permission) is a
:class:`RunError` naming the path, not a traceback: it is something the user
can fix. Weights are only read from safetensors; pickle is never unpickled.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import RunError, WeightsError

_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space (or choose another runs_dir) and try again",
    errno.EDQUOT: "the disk quota is exhausted; free some space and try again",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
}


def write_error(path: Path, exc: OSError) -> RunError:
    """A user-facing error for a write the file system refused."""
    advice = _ADVICE.get(exc.errno or 0, exc.strerror or str(exc))
    return RunError(f"cannot write {path}: {advice}")


@contextmanager
def refused_writes_explained(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` from writing under ``path`` into a :class:`RunError`."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno not in _ADVICE:
            raise
        raise write_error(path, exc) from None


@contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, str]]:
    """The one rename protocol every durable write here uses: a temporary file
    beside ``path`` (its open descriptor and its name) that, once the body has
    written and synced it, is renamed over ``path`` (and the directory synced);
    on any failure it is removed and ``path`` is left as it was."""
    with refused_writes_explained(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            yield fd, tmp
            os.chmod(tmp, _default_mode())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _default_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0666 less the umask
    (``mkstemp`` makes files 0600, which is not what users expect of outputs)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path``."""
    with _replacing(path) as (fd, _), os.fdopen(fd, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort where unsupported)."""
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


def fsync_file(path: Path | str) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


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
        fsync_file(tmp)


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
            f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupt. "
            "Restore it from a copy, or train the run again (`modiff train SETTINGS --overwrite`)."
        ) from None
    return tensors, metadata


def read_json(path: Path, what: str) -> Any:
    """A JSON file modiff wrote; damage is a :class:`RunError` naming the file."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise RunError(f"{path} ({what}) is unreadable: {exc}") from None
