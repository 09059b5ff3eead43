"""Run directories: where a trained pipeline lives, one writer at a time.

Layout of ``runs/<name>/``::

    settings.toml        the resolved settings, every default filled in
    data.json            what the components read from the dataset (image size, classes), so loading builds none
    LATEST               names the committed checkpoint (see :mod:`modiff.checkpoint`)
    checkpoints/NNNNNN/  complete checkpoints: the latest and the one before it
    metrics.jsonl        one JSON object per logged step (and per evaluation)
    samples/             sample grids and trajectories
    .lock                locked (``flock``) by the one process writing the run
    .modiff-run          the marker: this folder is a modiff run (written first, when modiff creates it)

A run is written by one process at a time: :meth:`RunDir.lock` takes an
exclusive ``flock`` on ``.lock`` and names the holder in it. The kernel
releases the lock when its process dies, however it dies, so a lock left by a
killed process is never stale.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from .checkpoint import FORMAT, Checkpoint, component_metadata, held, latest, load_state, tidy  # noqa: F401
from .errors import RunError

# Durable writes used to live here; they are re-exported for plugins that import them from modiff.runs.
from .files import (  # noqa: F401
    atomic_open,
    atomic_save_tensors,
    atomic_write_json,
    atomic_write_text,
    check_folder,
    read_tensors,
    refused_writes_explained,
)
from .names import FOLDER_NAME_RULE, is_folder_name


def check_run_name(name: str) -> str:
    """``name`` if it can name a run folder, else a :class:`RunError` saying what is allowed."""
    if not is_folder_name(name):
        raise RunError(f"[run] name = {name!r} cannot name a run folder: use {FOLDER_NAME_RULE}")
    return name


#: The file modiff writes first into a run folder it creates: what makes the folder a run (:meth:`RunDir.is_run`).
MARKER = ".modiff-run"


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> RunDir:
        return cls(Path(path))

    @property
    def settings(self) -> Path:
        return self.path / "settings.toml"

    @property
    def data_facts(self) -> Path:
        """What training saw of the dataset (:class:`modiff.assembly.DataFacts`)."""
        return self.path / "data.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def exists(self) -> bool:
        return self.settings.is_file()

    def is_run(self) -> bool:
        """Whether this folder is a modiff run by its own markers, not just any
        folder that happens to hold a ``settings.toml`` (another tool's, say):
        its settings beside the marker modiff writes first when it creates a
        run, or beside the checkpoint layout (``LATEST`` and ``checkpoints/``,
        or before checkpoints were folders ``state.json`` and ``components/``)
        of a run made otherwise (imported, started from a stage cache, or
        written before the marker existed). Only such a folder is ever resumed
        or emptied by ``--overwrite``."""
        if not self.exists():
            return False
        layouts = (("LATEST", "checkpoints"), ("state.json", "components"))
        return self.marker.is_file() or any(
            (self.path / file).is_file() and (self.path / folder).is_dir() for file, folder in layouts
        )

    def refuse_foreign(self) -> None:
        """A :class:`RunError` unless modiff may write here: the folder is a run
        (:meth:`is_run`), does not exist yet, holds nothing but what modiff
        itself puts in first (its lock and marker), or holds the marker, which
        modiff writes first: a run whose creation was killed before its settings
        landed (an ablation driver killed with its jobs) is started again, not
        refused. Called before anything is written, so that a folder of someone
        else's files is left untouched."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(
                f"{self.path} is a file, not a run folder; choose another [run] name or runs_dir"
            )
        check_folder(self.path.parent, "[run] runs_dir")
        if not self.path.is_dir() or self.is_run() or self.marker.is_file():
            return
        foreign = sorted(p.name for p in self.path.iterdir() if p.name not in (self.lock_file.name, MARKER))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise RunError(
                f"{self.path} exists and is not a modiff run (it holds {shown} and no {MARKER} marker); nothing "
                "in it was touched: choose another [run] name or runs_dir, or move that folder away"
            )

    def require(self) -> None:
        if not self.path.is_dir():
            raise RunError(f"run directory {self.path} does not exist; train one with `modiff train SETTINGS`")
        if not self.settings.is_file():
            raise RunError(f"{self.path} is not a modiff run: it has no settings.toml")

    # -- checkpoints -----------------------------------------------------

    def latest(self) -> Checkpoint | None:
        """The committed checkpoint, or ``None`` before the first one."""
        return latest(self.path)

    def checkpoint(self) -> Checkpoint:
        """The committed checkpoint; a :class:`RunError` saying what to do when there is none."""
        found = self.latest()
        if found is None:
            self._no_checkpoint()
        return found

    @contextmanager
    def reading(self) -> Iterator[Checkpoint]:
        """The committed checkpoint, held against removal by a trainer still
        writing the run while the body reads it (:func:`modiff.checkpoint.held`)."""
        with held(self.path) as found:
            if found is None:
                self._no_checkpoint()
            yield found

    def _no_checkpoint(self) -> NoReturn:
        writer = self.writer()
        if writer is not None:
            raise RunError(
                f"{self.path} is being trained by {writer} and has no checkpoint yet; "
                "wait for its first checkpoint (or for its training to end)"
            )
        raise RunError(
            f"{self.path} has no checkpoint yet: its training stopped before the first one. "
            f"Start it again with `modiff train {self.path} --resume`."
        )

    def weights(self, role: str) -> Path:
        """The weights file of ``role`` in the committed checkpoint."""
        return self.checkpoint().weights(role)

    def assets(self, role: str) -> Path:
        """The assets folder of ``role`` in the committed checkpoint."""
        return self.checkpoint().assets(role)

    def train_seconds(self) -> float | None:
        """Seconds the run has trained, by the trainer's own clock in its committed
        checkpoint: every stage, summed across resumes, without evaluation or
        sampling; ``None`` before the first checkpoint. What reports the run's
        training time: a command's own wall clock is not it (a call that only
        resumes a finished run to evaluate it trains nothing)."""
        found = self.latest()
        return found.train_seconds if found is not None else None

    def read_state(self) -> dict[str, Any]:
        """The committed checkpoint's state (stages done, stage, step), empty before one."""
        found = self.latest()
        if found is None:
            return {"format": FORMAT, "stages_done": [], "step": 0}
        return dict(found.state)

    # -- one writer --------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's write lock; a :class:`RunError` naming the holder when taken."""
        import fcntl

        with refused_writes_explained(self.lock_file):
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                raise RunError(
                    f"{self.path} is being written by {holder}; wait for it to finish (or stop it) "
                    "before training this run again"
                ) from None
            me = f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:3])})"
            with refused_writes_explained(self.lock_file):  # a disk already full refuses even these few bytes
                os.ftruncate(fd, 0)
                os.pwrite(fd, me.encode(), 0)
            tidy(self.path)
            yield
        finally:
            os.close(fd)  # releases the flock

    def writer(self) -> str | None:
        """Who writes the run now (the holder :meth:`lock` wrote), or ``None`` when
        no live process holds its lock: a driver that finds a run still being
        written (by a job its killed predecessor left) waits for it instead of
        counting the run as failed."""
        import fcntl

        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # only fails while a writer holds it
        except BlockingIOError:
            return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        finally:
            os.close(fd)  # releases the test's own shared lock at once
        return None

    # -- metrics -----------------------------------------------------------

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one line; lines past the last checkpoint are dropped on resume."""
        with refused_writes_explained(self.metrics):
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

    def keep_metrics(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Rewrite the metrics with only the records ``keep`` accepts."""
        if not self.metrics.is_file():
            return
        kept = [r for r in self.read_metrics() if keep(r)]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))
