"""A run's checkpoints: complete snapshots, each valid from one atomic step.

A checkpoint is a folder ``checkpoints/<NNNNNN>/`` holding everything a run
needs to generate from or to resume: ``state.json`` (stages finished, the
stage in progress and its step, training seconds so far, the roles it has
weights for), ``components/<role>.safetensors`` (weights for inference, EMA
where kept, with the plugin's name, distribution, version and settings in the
metadata), ``components/<role>/`` (non-tensor assets: vocabularies,
tokenizers) and, while a stage is in progress, ``trainer.safetensors`` and
``trainer.json`` (raw weights and optimizer state of that stage).

Committing one (:class:`CheckpointWriter`) takes four steps: write every file
into a hidden staging folder and sync it; rename the folder to its number;
replace the run's ``LATEST`` file, which names the committed checkpoint —
**the one atomic step at which the checkpoint becomes valid**; remove the
checkpoints older than the one before it. A process killed before that rename
leaves ``LATEST`` naming the previous checkpoint, complete and untouched; the
leftovers are removed by the next writer (:func:`tidy`). Files of components
that did not change since the previous checkpoint are hard links to it, so a
checkpoint of the denoiser stage does not copy the autoencoder again.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import torch

from .errors import RunError, WeightsError
from .files import (
    atomic_save_tensors,
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    read_json,
    read_tensors,
    refused_writes_explained,
)

#: Format of component files' metadata and of checkpoint state.
FORMAT = "modiff/1"
POINTER = "LATEST"
FOLDER = "checkpoints"
#: The file in a checkpoint folder that readers hold a shared ``flock`` on while they read
#: the checkpoint (:func:`held`); :func:`tidy` removes only folders it can lock exclusively.
READERS = ".readers"


@dataclass(frozen=True)
class Checkpoint:
    """One committed checkpoint (read-only)."""

    path: Path
    state: Mapping[str, Any] = field(default_factory=dict)
    #: a run written before checkpoints had folders (components/ at the run's root)
    legacy: bool = False

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def stages_done(self) -> list[str]:
        return list(self.state.get("stages_done", []))

    @property
    def stage(self) -> str | None:
        """The stage in progress (its trainer state is in this checkpoint), or ``None``."""
        return self.state.get("stage")

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))

    @property
    def train_seconds(self) -> float:
        return float(self.state.get("train_seconds", 0.0))

    @property
    def roles(self) -> list[str]:
        """Roles with a weights file in this checkpoint."""
        return list(self.state.get("components", []))

    @property
    def components(self) -> Path:
        return self.path / "components"

    def weights(self, role: str) -> Path:
        return self.components / f"{role}.safetensors"

    def assets(self, role: str) -> Path:
        return self.components / role

    @property
    def trainer_tensors(self) -> Path:
        return self.path / ("checkpoint/trainer.safetensors" if self.legacy else "trainer.safetensors")

    @property
    def trainer_scalars(self) -> Path:
        return self.path / ("checkpoint/trainer.json" if self.legacy else "trainer.json")

    def trainer_state(self, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Raw weights and optimizer state of the stage in progress."""
        tensors, _ = read_tensors(self.trainer_tensors, device=device)
        scalars = read_json(self.trainer_scalars, "optimizer state")
        if scalars.get("stage") != self.stage or int(scalars.get("step", -1)) != self.step:
            raise RunError(
                f"{self.trainer_scalars} belongs to stage {scalars.get('stage')!r} step {scalars.get('step')}, "
                f"but {self.path / 'state.json'} says {self.stage!r} step {self.step}; the checkpoint was changed "
                "after it was written"
            )
        return tensors, scalars


def latest(run_path: Path) -> Checkpoint | None:
    """The run's committed checkpoint (``None`` before the first commit)."""
    pointer = run_path / POINTER
    if pointer.is_file():
        try:
            name = pointer.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RunError(f"{pointer} is unreadable ({exc})") from None
        folder = run_path / FOLDER / name
        if not name or "/" in name or not (folder / "state.json").is_file():
            raise RunError(
                f"{pointer} names checkpoint {name!r}, but {folder} is missing or incomplete; the run folder was "
                "changed by something other than modiff. Train it again with --overwrite."
            )
        return Checkpoint(folder, read_json(folder / "state.json", "checkpoint state"))
    legacy = run_path / "state.json"
    if legacy.is_file() and (run_path / "components").is_dir():
        state = dict(read_json(legacy, "run state"))
        state.setdefault("components", sorted(p.stem for p in (run_path / "components").glob("*.safetensors")))
        return Checkpoint(run_path, state, legacy=True)
    return None


def tidy(run_path: Path) -> None:
    """Remove what a killed writer left behind: staging folders, checkpoints that
    were never committed, and checkpoints older than the one before the latest
    (but not one a reader still holds: a later tidy removes it). Only the
    process holding the run's lock may call this."""
    folder = run_path / FOLDER
    if not folder.is_dir():
        return
    current = latest(run_path)
    keep = set()
    if current is not None and not current.legacy:
        keep = {current.name, str(current.state.get("previous") or "")}
    for entry in folder.iterdir():
        if entry.name not in keep:
            _remove_unless_read(entry) if entry.is_dir() else entry.unlink(missing_ok=True)


def _remove_unless_read(folder: Path) -> None:
    """Remove ``folder`` unless a reader holds its :data:`READERS` lock. It is
    renamed away while locked, so a reader that locks it next finds its name
    gone and takes the new ``LATEST`` instead."""
    import fcntl

    try:
        fd = os.open(folder / READERS, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return
    doomed = folder.parent / f".{folder.name}.{os.getpid()}.removed"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # being read
        shutil.rmtree(doomed, ignore_errors=True)
        os.rename(folder, doomed)
    finally:
        os.close(fd)
    shutil.rmtree(doomed, ignore_errors=True)


@contextmanager
def held(run_path: Path, attempts: int = 50) -> Iterator[Checkpoint | None]:
    """The run's committed checkpoint (``None`` before the first), held against
    removal while the body reads it: a reader (generate, evaluate) beside a
    training run reads one checkpoint whole, even if the trainer commits two
    more meanwhile. Should the checkpoint ``LATEST`` named be removed before it
    is held, the new one is taken."""
    import fcntl

    for _ in range(attempts):
        name = _pointer(run_path)
        try:
            current = latest(run_path)
        except RunError:
            if _pointer(run_path) == name:
                raise
            continue  # the trainer moved on while we looked: take its new checkpoint
        if current is None or current.legacy:
            yield current
            return
        fd = _open_readers(current.path)
        if fd is None:
            if not (current.path / "state.json").is_file():
                continue
            yield current  # a folder no one can write a lock file in: no one removes it either
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if (current.path / "state.json").is_file():  # not renamed away before we held it
                yield current
                return
        finally:
            os.close(fd)
    raise RunError(
        f"{run_path} is being trained and its checkpoints changed {attempts} times while this process tried to "
        "read one; try again"
    )


def _pointer(run_path: Path) -> str | None:
    try:
        return (run_path / POINTER).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _open_readers(folder: Path) -> int | None:
    """A descriptor of ``folder``'s :data:`READERS` file (created if need be), or
    ``None`` if the folder is gone or no file can be made in it."""
    for flags in (os.O_RDONLY | os.O_CREAT, os.O_RDONLY):
        try:
            return os.open(folder / READERS, flags, 0o644)
        except FileNotFoundError:
            return None
        except OSError:
            continue
    return None


def component_metadata(role: str, registration: Any, params: Any) -> dict[str, str]:
    """What a component file says about the component it holds."""
    return {
        "format": FORMAT,
        "role": role,
        "plugin": registration.name,
        "distribution": registration.distribution,
        "version": registration.version,
        "settings": json.dumps(params.model_dump(mode="json"), sort_keys=True),
    }


class CheckpointWriter:
    """Stage a new checkpoint beside the committed ones, then commit it at once.

    Use as a context manager: on an exception the staging folder is removed
    and nothing changes; :meth:`commit` makes it the run's checkpoint.
    """

    def __init__(self, run_path: Path, previous: Checkpoint | None = None):
        self.run_path = run_path
        self.previous = previous if previous is not None and not previous.legacy else None
        self.folder = run_path / FOLDER
        self.number = _next_number(self.folder, self.previous)
        self.staging = self.folder / f".{self.number:06d}.tmp"
        with refused_writes_explained(self.staging):
            if self.staging.exists():
                shutil.rmtree(self.staging)
            (self.staging / "components").mkdir(parents=True)
        self.roles: list[str] = []
        self.committed: Checkpoint | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if self.committed is None:
            shutil.rmtree(self.staging, ignore_errors=True)

    # -- contents ------------------------------------------------------

    def save_component(
        self,
        role: str,
        tensors: Mapping[str, torch.Tensor],
        metadata: Mapping[str, str],
        module: Any = None,
    ) -> None:
        """A component's weights (and, if ``module`` has ``save_assets``, its assets)."""
        save_assets = getattr(module, "save_assets", None)
        if callable(save_assets):
            assets = self.staging / "components" / role
            with refused_writes_explained(assets):
                assets.mkdir(parents=True, exist_ok=True)
                save_assets(assets)
        atomic_save_tensors(
            self.staging / "components" / f"{role}.safetensors", _unshare(dict(tensors)), dict(metadata)
        )
        self.roles.append(role)

    def carry(self, role: str, *, source: Checkpoint | None = None) -> None:
        """Keep ``role`` as it is in the previous checkpoint, or in ``source`` (a
        checkpoint of another run: :mod:`modiff.stage_cache`); hard links, no copy."""
        source = source if source is not None else self.previous
        if source is None or role not in source.roles:
            raise RunError(f"cannot carry the {role} over: the previous checkpoint has no weights for it")
        target = self.staging / "components"
        with refused_writes_explained(target):
            _link_or_copy(source.weights(role), target / f"{role}.safetensors")
            if source.assets(role).is_dir():
                shutil.copytree(source.assets(role), target / role, copy_function=_link_or_copy)
        self.roles.append(role)

    def save_trainer(self, tensors: Mapping[str, torch.Tensor], scalars: Mapping[str, Any]) -> None:
        """Raw weights and optimizer state of the stage in progress."""
        atomic_save_tensors(self.staging / "trainer.safetensors", dict(tensors))
        atomic_write_json(self.staging / "trainer.json", dict(scalars))

    # -- the commit ----------------------------------------------------

    def commit(self, state: Mapping[str, Any]) -> Checkpoint:
        """Make the staged checkpoint the run's checkpoint (one rename of ``LATEST``)."""
        final = self.folder / f"{self.number:06d}"
        full = {
            "format": FORMAT,
            **state,
            "components": sorted(set(self.roles)),
            "previous": self.previous.name if self.previous is not None else None,
            "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        atomic_write_json(self.staging / "state.json", full)
        with refused_writes_explained(final):
            for sub in (self.staging / "components", self.staging):
                fsync_dir(sub)
            if final.exists():  # an uncommitted leftover of a killed writer
                shutil.rmtree(final)
            os.rename(self.staging, final)
            fsync_dir(self.folder)
        atomic_write_text(self.run_path / POINTER, final.name + "\n")  # <- the checkpoint is valid from here
        self.committed = Checkpoint(final, full)
        tidy(self.run_path)
        return self.committed


def _next_number(folder: Path, previous: Checkpoint | None) -> int:
    numbers = [int(p.name.strip(".").split(".")[0]) for p in folder.glob("*") if p.name.strip(".")[:6].isdigit()]
    if previous is not None and previous.name.isdigit():
        numbers.append(int(previous.name))
    return max(numbers, default=0) + 1


def _link_or_copy(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): copy duplicates."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, v in tensors.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else (id(v), 0)
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out


# --------------------------------------------------------------------------
# Reading components back
# --------------------------------------------------------------------------


def load_component(checkpoint: Checkpoint, role: str, module: torch.nn.Module, registration: Any) -> None:
    """Restore a component's assets and weights, checking the file belongs to it."""
    path = checkpoint.weights(role)
    if not path.is_file():
        raise WeightsError(
            f"{path} is missing: the run's checkpoint {checkpoint.path} should hold the trained {role}. "
            "Train the run again (or resume it, if it is unfinished)."
        )
    assets = checkpoint.assets(role)
    load_assets = getattr(module, "load_assets", None)
    if callable(load_assets) and assets.is_dir():
        load_assets(assets)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    tensors, metadata = read_tensors(path, device=device)
    plugin = metadata.get("plugin")
    if metadata.get("format") != FORMAT or plugin is None:
        raise WeightsError(
            f"{path} was not written by modiff (no modiff metadata); it cannot be restored as the {role}"
        )
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
