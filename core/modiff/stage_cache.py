"""Finished training stages, kept for other runs whose settings decide them alike.

The stages before the denoiser's (the autoencoder, the text embedder's own
stage) are often the same in many runs: an ablation that swaps the
conditioner, or repeats a cell, trains the same autoencoder each time. A
stage's result is a function of the settings that come before it in the
pipeline — the run's seed and precision, the data, and each earlier stage's
component and budget — because the core builds those components first, draws
every step's batch and noise from the step's own seed, and never lets a later
component touch an earlier stage. :func:`stage_keys` names that function's
input; a :class:`StageCache` keeps the checkpoint a run commits at the end of
a stage under its key, and starts another run with the same key from a copy
of it. The run then resumes as if it had trained the stage itself: bit for
bit the same weights, and the same training seconds (the stage's cost is
counted in every run that uses it, so cost curves stay honest).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, CheckpointWriter, latest
from .files import atomic_write_json, atomic_write_text, read_json
from .runs import RunDir
from .settings import ResolvedSettings

#: The stages that can be shared, in training order, and the settings tables each adds to the key.
SHARED_STAGES: dict[str, tuple[str, ...]] = {
    "encoder": ("encoder", "train.encoder"),
    "text_embedder": ("text_embedder", "train.text_embedder"),
}

#: ``[run]`` keys that name where a run is, not what it computes.
_WHERE = ("name", "runs_dir")


def _table(settings: dict[str, Any], dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def stage_keys(resolved: ResolvedSettings, processes: int = 1) -> dict[str, str]:
    """For each shareable stage, a digest of every setting that decides the
    weights at its end: ``[run]`` (but its name and folder), ``[data]``, and the
    component and ``[train.<stage>]`` of that stage and of every stage before it.

    ``processes`` is the number of training processes: each adds its share of
    the batch's gradient in an order of its own, so a stage trained by two
    processes ends a few last bits away from the same stage trained by one,
    and the two are kept apart (one process's keys are those of a run that
    never heard of processes)."""
    d = resolved.to_dict()
    parts: dict[str, Any] = {
        "run": {k: v for k, v in d["run"].items() if k not in _WHERE},
        "data": d.get("data"),
    }
    if processes != 1:
        parts["processes"] = processes
    keys = {}
    for stage, tables in SHARED_STAGES.items():
        parts.update({t: _table(d, t) for t in tables})
        keys[stage] = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return keys


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
        tmp = self.folder / f".{key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(checkpoint.path, tmp)
            stages = set(checkpoint.stages_done)
            lines = [ln for ln in run.metrics.read_text().splitlines() if json.loads(ln).get("stage") in stages] \
                if run.metrics.is_file() else []
            atomic_write_text(tmp / "metrics.jsonl", "".join(ln + "\n" for ln in lines))
            atomic_write_json(tmp / "source.json", {"run": str(run.path), "stage": stage})
            os.replace(tmp, entry)
        except OSError:  # another process kept it first, or the disk said no: the run is unaffected
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        return True

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
        source = Checkpoint(self.entry(keys[stage]), read_json(self.entry(keys[stage]) / "state.json", "stage cache"))
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
            if run.path.is_dir() and not any(run.path.iterdir()):
                run.path.rmdir()
            os.rename(staging, run.path)  # the run appears whole, or not at all
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        return stage
