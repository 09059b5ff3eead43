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
import struct
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from .errors import RunError, WeightsError

#: The ``__metadata__`` entry of a weights file holding the :func:`data_checksum` of its tensor data.
CHECKSUM_KEY = "modiff.checksum"

_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space (or choose another runs_dir) and try again",
    errno.EDQUOT: "the disk quota is exhausted; free some space and try again",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
}


#: The operating system's words for each refusal, for libraries that pass on only its message (safetensors'
#: ``SafetensorError`` reads "... No space left on device ..." and has no errno).
_WORDS = {code: os.strerror(code) for code in _ADVICE}


def refusal(exc: BaseException) -> int | None:
    """The errno of a write the file system refused (disk full, quota, read-only,
    no permission) that ``exc`` reports, whichever library raised it; ``None``
    for anything else (a bug, or a missing file, keeps its own error)."""
    if isinstance(exc, FileNotFoundError):
        return None
    code = getattr(exc, "errno", None)
    if code in _ADVICE:
        return code
    if isinstance(exc, (OSError, SafetensorError, RuntimeError)):
        text = str(exc)
        return next((code for code, words in _WORDS.items() if words in text), None)
    return None


def write_error(path: Path, exc: BaseException) -> RunError:
    """A user-facing error for a write the file system refused: the path and what to do."""
    code = refusal(exc)
    advice = _ADVICE[code] if code is not None else getattr(exc, "strerror", None) or str(exc)
    filename = getattr(exc, "filename", None)
    if filename and path.is_dir() and Path(filename).is_relative_to(path):  # the file itself, when known
        path = Path(filename)
    if not isinstance(exc, OSError):  # a library's error carries the OS's words, maybe the file: keep them
        advice += f" ({type(exc).__name__}: {exc})"
    return RunError(f"cannot write {path}: {advice}")


@contextmanager
def refused_writes_explained(path: Path) -> Iterator[None]:
    """The one guard around writes under ``path``: a refusal by the file system
    (see :func:`refusal`), raised by the OS, torch, PIL or safetensors, becomes
    a :class:`RunError` naming the path; anything else passes unchanged."""
    try:
        yield
    except (OSError, SafetensorError, RuntimeError) as exc:
        if refusal(exc) is None:
            raise
        raise write_error(path, exc) from None


def check_folder(folder: Path, what: str) -> None:
    """A :class:`RunError` naming ``what`` (the option or key it came from) when
    ``folder`` cannot be a folder: it, or the nearest existing path above it,
    is something else (``/dev/null``, ``grid.png/x``). Checked before the work
    whose files it would refuse."""
    for above in (folder, *folder.parents):
        if above.exists():
            if not above.is_dir():
                where = "is" if above == folder else f"would be inside {above}, which is"
                raise RunError(f"{what} {folder} {where} not a folder; give a folder")
            return


def make_folder(folder: Path) -> None:
    """``mkdir -p folder``, where a place no folder can be made (``/proc/x``: the
    OS answers "no such file or directory" for a path it will not create) is a
    :class:`RunError` naming the folder, as a refused write is, not a
    ``FileNotFoundError`` traceback."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileNotFoundError as exc:
        raise RunError(
            f"cannot make the folder {folder}: {exc.strerror or exc}; choose a folder you can write to"
        ) from None


def numbered_folder(parent: Path) -> Path:
    """A new folder ``parent/NNNN`` numbered one past the highest there, made
    with one ``mkdir`` each try, so two processes never get the same one (the
    Stable Diffusion web UIs' numbered outputs: no call writes over another's)."""
    check_folder(parent, "the output folder")
    with refused_writes_explained(parent):
        make_folder(parent)
        number = max((int(p.name) for p in parent.iterdir() if p.name.isdigit()), default=0) + 1
        while True:
            folder = parent / f"{number:04d}"
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                number += 1


def check_output_path(folder: Path, file: Path, what: str) -> None:
    """:func:`check_folder`, and a :class:`RunError` when ``file`` (to be written
    into ``folder``) is an existing folder."""
    check_folder(folder, what)
    if file.is_dir():
        raise RunError(f"{what} {file} is a folder, not a file; give a .png file, or that folder itself")


@contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, str]]:
    """The one rename protocol every durable write here uses: a temporary file
    beside ``path`` (its open descriptor and its name) that, once the body has
    written and synced it, is renamed over ``path`` (and the directory synced);
    on any failure it is removed and ``path`` is left as it was."""
    with refused_writes_explained(path):
        make_folder(path.parent)
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
    """safetensors ``save_file`` made atomic (written beside, then renamed), with
    the :func:`data_checksum` of its tensor data in the metadata, so that a
    read can tell a damaged file from a good one."""
    with _replacing(path) as (fd, tmp):
        os.close(fd)  # safetensors writes by name
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        # the data's layout does not depend on the metadata: serialize once to checksum it
        checksum = data_checksum(safetensors.torch.save(contiguous, metadata))
        save_file(contiguous, tmp, metadata={**(metadata or {}), CHECKSUM_KEY: checksum})
        fsync_file(tmp)


def data_checksum(raw: bytes) -> str:
    """The CRC-32 of a safetensors file's tensor data (every byte after its
    header): any burst of damage up to 32 bits long changes it, and any other
    with odds of 1 in 4 billion to stay the same; cheap enough to check at
    every load."""
    (header,) = struct.unpack_from("<Q", raw)
    return f"crc32:{zlib.crc32(memoryview(raw)[8 + header:]):08x}"


def recorded_checksum(path: Path) -> str | None:
    """The :func:`data_checksum` a weights file recorded when it was written,
    read from its header alone (``None`` for a file written before checksums)."""
    try:
        with path.open("rb") as f:
            (header,) = struct.unpack("<Q", f.read(8))
            metadata = json.loads(f.read(header)).get("__metadata__") or {}
    except (OSError, ValueError, struct.error) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from None
    return metadata.get(CHECKSUM_KEY)


def read_tensors(
    path: Path, *, device: str | torch.device = "cpu", verify: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; any damage is a :class:`WeightsError`
    naming the file: unreadable, tensor data that does not match the checksum
    recorded when it was written (files written before checksums have none and
    are not checked), or a NaN or infinite value (named with its tensor).
    ``verify = False`` skips the last two checks (to measure what they cost)."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        raw = path.read_bytes()
        tensors = safetensors.torch.load(raw)
        (header,) = struct.unpack_from("<Q", raw)
        metadata = dict(json.loads(bytes(memoryview(raw)[8:8 + header])).get("__metadata__") or {})
    except (SafetensorError, OSError, ValueError, RuntimeError, struct.error) as exc:
        raise WeightsError(
            f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupt. "
            "Restore it from a copy, or train the run again (`modiff train SETTINGS --overwrite`)."
        ) from None
    if verify:
        recorded = metadata.get(CHECKSUM_KEY)
        if recorded is not None and recorded != data_checksum(raw):
            raise WeightsError(
                f"{path} is damaged: its tensor data does not match the checksum recorded when it was written "
                "(bits changed on disk, or the file was edited). Restore it from a copy, or train the run again "
                "(`modiff train SETTINGS --overwrite`)."
            )
        _refuse_non_finite(path, tensors)
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, metadata


def _refuse_non_finite(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """A :class:`WeightsError` naming the first tensor (by name) holding a NaN or
    an infinity. One sum per dtype finds out cheaply whether to look: a
    non-finite value makes the sum non-finite (a sum can also overflow, so
    each tensor is checked before one is blamed)."""
    floats: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors.values():
        if tensor.is_floating_point() or tensor.is_complex():
            floats.setdefault(tensor.dtype, []).append(tensor.reshape(-1))
    if all(bool(torch.cat(group).sum().isfinite().all()) for group in floats.values()):
        return
    for name in sorted(tensors):
        tensor = tensors[name]
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(
                f"{path}: tensor {name!r} holds {bad} NaN or infinite value(s); the weights are damaged, "
                "and a model loaded from them would draw black images or train on NaN. Restore the file from "
                "a copy, or train the run again (`modiff train SETTINGS --overwrite`)."
            )


def read_json(path: Path, what: str) -> Any:
    """A JSON file modiff wrote; damage is a :class:`RunError` naming the file."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise RunError(f"{path} ({what}) is unreadable: {exc}") from None
