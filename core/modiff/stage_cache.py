"""Finished training stages, kept for other runs whose settings decide them alike.

The stages before the denoiser's (the autoencoder, the text embedder's own
stage) are often the same in many runs: an ablation that swaps the
conditioner, or repeats a cell, trains the same autoencoder each time. A
stage's result is a function of the settings that come before it in the
pipeline — the run's seed and precision, the data, and each earlier stage's
component and budget — because the core builds those components first, draws
every step's batch and noise from the step's own seed, and never lets a later
component touch an earlier stage — and of what computes it: the number of
threads, torch's version, the versions of modiff and of the plugins'
distributions, and the device (the same settings on two threads end a few
last bits away from one thread's). :func:`stage_keys` names that function's
input; a :class:`StageCache` keeps the checkpoint a run commits at the end of
a stage under its key, and starts another run with the same key from a copy
of it. The run then resumes as if it had trained the stage itself: bit for
bit the same weights, and the same training seconds (the stage's cost is
counted in every run that uses it, so cost curves stay honest).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .checkpoint import Checkpoint, CheckpointWriter, latest
from .devices import resolve_device
from .errors import ModiffError, RunError
from .files import atomic_write_json, atomic_write_text, read_json, read_tensors
from .runs import RunDir
from .settings import ResolvedSettings

#: The stages that can be shared, in training order, and the settings tables each adds to the key.
SHARED_STAGES: dict[str, tuple[str, ...]] = {
    "encoder": ("encoder", "train.encoder"),
    "text_embedder": ("text_embedder", "train.text_embedder"),
}

#: ``[run]`` keys that name where a run is, not what it computes.
_WHERE = ("name", "runs_dir")
#: The file in the cache folder that writers hold a shared ``flock`` on while they copy an entry in.
_WRITERS = ".writers"


def _table(settings: dict[str, Any], dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def stage_keys(resolved: ResolvedSettings, processes: int = 1, threads: int | None = None) -> dict[str, str]:
    """For each shareable stage, a digest of everything that decides the
    weights at its end: ``[run]`` (but its name and folder), ``[data]``, and the
    component and ``[train.<stage>]`` of that stage and of every stage before it
    (with the version of each component's distribution), and what computes it
    (:func:`_computed_by`: threads, device, torch's and modiff's versions).

    ``processes`` is the number of training processes: each adds its share of
    the batch's gradient in an order of its own, so a stage trained by two
    processes ends a few last bits away from the same stage trained by one,
    and the two are kept apart. ``threads`` is the number of threads each
    trains with (by default this process's torch's)."""
    d = resolved.to_dict()
    parts: dict[str, Any] = {
        "run": {k: v for k, v in d["run"].items() if k not in _WHERE},
        "data": d.get("data"),
        "plugins": {"data": _distribution(resolved, "data")},
        "computed by": _computed_by(resolved, torch.get_num_threads() if threads is None else threads),
    }
    if processes != 1:
        parts["processes"] = processes
    keys = {}
    for stage, tables in SHARED_STAGES.items():
        parts.update({t: _table(d, t) for t in tables})
        parts["plugins"][stage] = _distribution(resolved, stage)
        keys[stage] = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return keys


def _distribution(resolved: ResolvedSettings, role: str) -> str | None:
    """``name version`` of the distribution whose plugin builds ``role`` (its code decides the stage's bits)."""
    component = resolved.components.get(role)
    if component is None:
        return None
    return f"{component.registration.distribution} {component.registration.version}"


def _computed_by(resolved: ResolvedSettings, threads: int) -> dict[str, Any]:
    """What, besides the settings, changes a stage's bits: the thread count, torch's
    and modiff's versions, and the device the run trains on (``auto`` resolved
    here; the GPU's or the CPU's model, whose kernels differ)."""
    device = resolve_device(resolved.run.device)
    if device.type == "cuda":
        model = torch.cuda.get_device_name(device)
    else:
        model = _cpu_model()
    return {"threads": threads, "torch": torch.__version__, "modiff": _modiff_version(),
            "device": f"{device.type} {model}".strip()}


@functools.cache
def _modiff_version() -> str:
    try:
        return importlib.metadata.version("modiff")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: The file in a run's folder that says which kept stages the run started from.
STARTED_FROM = "started-from-stages.json"


def started_from_stages(run: RunDir) -> list[str] | None:
    """The stages ``run`` did not train itself, copied from a kept stage when it
    started (:meth:`StageCache.start`), however often it was resumed since;
    ``None`` for a run that trained every stage."""
    path = run.path / STARTED_FROM
    return list(read_json(path, "the kept stages the run started from")["stages"]) if path.is_file() else None


class StageCache:
    """Checkpoints at the end of shared stages, by :func:`stage_keys` key.

    An entry is a checkpoint folder (``state.json`` and the stage's
    ``components/``) plus ``metrics.jsonl`` (the producing run's lines for
    those stages); it appears in one rename, so a reader never sees half of one.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def entry(self, key: str) -> Path:
        return self.folder / key

    def has(self, key: str) -> bool:
        return (self.entry(key) / "state.json").is_file()

    def must_wait(self, keys: Iterable[str], running: Iterable[Iterable[str]]) -> bool:
        """Whether a run with stage ``keys`` should wait before starting: a running
        run (each of ``running`` is one run's keys) could still keep one of its
        stages, so waiting lets it start after that stage instead of training it again."""
        busy = set().union(*(set(k) for k in running))
        return any(k in busy and not self.has(k) for k in keys)

    def keep(self, run: RunDir, stage: str, checkpoint: Checkpoint, resolved: ResolvedSettings,
             processes: int = 1) -> bool:
        """Keep ``checkpoint``, committed by ``run`` (trained by ``processes``
        processes) at the end of ``stage`` (``False`` if that key is kept already
        or the stage is not shareable)."""
        if stage not in SHARED_STAGES:
            return False
        key = stage_keys(resolved, processes)[stage]
        if self.has(key):
            return False
        entry = self.entry(key)
        with self._writing():
            tmp = self.folder / f".{key}.{os.getpid()}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                shutil.copytree(checkpoint.path, tmp)
                stages = set(checkpoint.stages_done)
                lines = [ln for ln in run.metrics.read_text().splitlines()
                         if json.loads(ln).get("stage") in stages] if run.metrics.is_file() else []
                atomic_write_text(tmp / "metrics.jsonl", "".join(ln + "\n" for ln in lines))
                atomic_write_json(tmp / "source.json", {"run": str(run.path), "stage": stage})
                os.replace(tmp, entry)
            except OSError:  # another process kept it first, or the disk said no: the run is unaffected
                shutil.rmtree(tmp, ignore_errors=True)
                return False
        return True

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the cache's writers' lock (shared: writers copy side by side) while
        copying an entry in; first, if no writer is copying now, remove the
        temporary folders of writers killed in the middle of a copy."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / _WRITERS, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # a writer is copying: its folder is not a leftover; a later writer tidies
            else:
                for leftover in self.folder.glob(".*.tmp"):
                    shutil.rmtree(leftover, ignore_errors=True)
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _source(self, key: str) -> Checkpoint:
        """The checkpoint kept under ``key``, every file checked; damage is a
        :class:`RunError` naming the cache entry (not the run it would be copied into)."""
        entry = self.entry(key)
        try:
            source = Checkpoint(entry, read_json(entry / "state.json", "stage cache entry"))
            for role in source.roles:
                read_tensors(source.weights(role))
            if not (entry / "metrics.jsonl").is_file():
                raise RunError(f"{entry / 'metrics.jsonl'} is missing")
        except ModiffError as exc:
            raise RunError(
                f"the stage cache entry {entry} is damaged: {exc}. Remove that folder; the next run that trains "
                "the stage keeps it again."
            ) from None
        return source

    def start(self, run: RunDir, resolved: ResolvedSettings, processes: int = 1) -> str | None:
        """Start the not-yet-started ``run`` (to be trained by ``processes``
        processes) from the latest stage kept for its settings; returns that
        stage's name, or ``None`` (the run starts from scratch)."""
        if run.exists() or latest(run.path) is not None:
            return None
        keys = stage_keys(resolved, processes)
        for stage in reversed(SHARED_STAGES):
            if self.has(keys[stage]):
                break
        else:
            return None
        source = self._source(keys[stage])
        staging = run.path.parent / f".{run.path.name}.starting"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            shutil.copyfile(source.path / "metrics.jsonl", staging / "metrics.jsonl")
            with CheckpointWriter(staging) as writer:
                for role in source.roles:
                    writer.carry(role, source=source)
                writer.commit({"stages_done": source.stages_done, "stage": None, "step": 0,
                               "train_seconds": source.train_seconds, "started_from": str(source.path)})
            atomic_write_text(staging / "settings.toml", resolved.to_toml())
            # kept beside the run for good (checkpoints are pruned): what a record says it started from
            atomic_write_json(staging / STARTED_FROM, {"stages": source.stages_done, "from": str(source.path)})
            if run.path.is_dir() and not any(run.path.iterdir()):
                run.path.rmdir()
            os.rename(staging, run.path)  # the run appears whole, or not at all
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        return stage
