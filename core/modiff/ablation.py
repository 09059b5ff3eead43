"""Ablations: a base settings file, a grid of changes, repeats, one report that decides.

An ablation file::

    base = "../configs/demo.toml"   # relative to this file
    name = "seeds"                  # output folder under runs_dir (default: file stem)
    seeds = [0, 1, 2]               # repeats; every cell runs once per seed
    seed_settings = ["run.seed"]    # the settings each repeat's seed is written to
    prompts = ["a red circle", ...] # shown side by side for every cell (optional)
    share_stages = true             # runs whose settings decide a stage alike share it (default)

    [set]                           # applied to every cell: the shared budget
    "train.steps" = 1500
    "train.eval_every" = 500        # learning curves: accuracy against training seconds

    [grid]                          # full product of these values
    "text_embedder.plugin" = ["word2vec", "clip"]

    [[variant]]                     # and/or named variants, each a set of changes
    name = "pixel"
    set = { "encoder.plugin" = "identity" }
    # seeds = [0]                   # this variant's own repeats (default: the file's)

    [metrics]                       # the report's compact table: key = human name
    one_object_accuracy = "one object"

    [threshold]                     # cost: training seconds to reach this value
    metric = "one_object_accuracy"
    value = 0.8

    [timing]                        # a load-free time axis: every cell's step timed
    rounds = 3                      # interleaved in one process (modiff.step_timing)

    [final_evaluation]              # the final evaluation's evaluator settings:
    num_prompts = 300               # more prompts than along the curve

    [[compare]]                     # a claim: the report computes its verdict
    claim = "latent space is cheaper at equal quality"
    a = "latent"
    b = "pixel"
    metrics = ["seconds_to_threshold", "one_object_accuracy"]

A *cell* is one combination of grid values and one variant; a *run* is a
cell under one seed (its directory is the cell's name, plus ``,seed=N`` when
the cell has more than one seed). Every run is resolved and validated before
anything trains. Runs go in file order (a variant may use an earlier
variant's output, e.g. its weights); a finished run is skipped when the
ablation runs again, a failed one is retried. A run is its cell's only while
its settings are the cell's (:mod:`modiff.cell_settings`): a run whose cell
was edited since it started is moved aside and the cell trained again.
Verdicts are never written in the file: the report computes them
(:mod:`modiff.stats`).

Two things keep a grid cheap. Runs whose settings decide a stage before the
denoiser's alike (the same seed, data, autoencoder and its budget; then the
same text embedder) train it once: the others start from a copy of its
checkpoint (:mod:`modiff.stage_cache`), ending bit for bit where they would
have, with the stage's seconds counted in each. And ``jobs`` runs train side
by side, one process each with an equal share of the cores: on a small model
two one-thread processes do nearly twice the work of one two-thread process.
A run that would share a stage another running run is still training waits
for it.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
import sys
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import progress as shown_progress
from . import stats
from .cell_settings import cell_digest, kept_aside, set_aside_if_changed
from .errors import ModiffError, SettingsError
from .grid_runner import POLL_SECONDS, PendingRun, run_grid
from .launching import DEFAULT as DEFAULT_LAUNCHER
from .launching import build_launcher, chosen_name, launcher_settings
from .names import FOLDER_NAME_RULE, is_folder_name
from .protocols import LaunchedRun, Launcher, RunJob
from .report import write_report
from .runs import RunDir, atomic_write_json
from .settings import ResolvedSettings, did_you_mean, load, nesting_refused
from .stage_cache import StageCache, stage_keys, started_from_stages
from .toml_io import format_value

#: The cost metric: training seconds (every stage) until ``[threshold]`` is reached.
COST = "seconds_to_threshold"


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    set: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] | None = Field(None, min_length=1)


class Threshold(BaseModel):
    """``[threshold]``: the quality at which cells are compared by cost."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    value: float


class Compare(BaseModel):
    """``[[compare]]``: two cells and the metrics that decide between them.

    There is no field for the verdict: it is computed from the runs.
    """

    model_config = ConfigDict(extra="forbid")

    a: str
    b: str
    metrics: list[str] = Field(min_length=1)
    claim: str = ""


class LauncherTable(BaseModel):
    """``[launcher]``: where the runs execute (:mod:`modiff.launching`); the
    other keys are the named launcher's own options, checked by its plugin."""

    model_config = ConfigDict(extra="allow")

    name: str = "local"


class Timing(BaseModel):
    """``[timing]``: time every cell's training step interleaved in one process
    before the grid trains (:mod:`modiff.step_timing`), for a load-free time axis."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(3, ge=1)
    steps: int = Field(3, ge=1)


class AblationFile(BaseModel):
    """The schema of an ablation file."""

    model_config = ConfigDict(extra="forbid")

    base: str | list[str]
    name: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    seed_settings: list[str] = Field(default_factory=lambda: ["run.seed"], min_length=1)
    prompts: list[str] = Field(default_factory=list)
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variant: list[Variant] = Field(default_factory=list)
    images_per_prompt: int = Field(2, ge=1)
    share_stages: bool = True
    metrics: dict[str, str] = Field(default_factory=dict)
    threshold: Threshold | None = None
    compare: list[Compare] = Field(default_factory=list)
    launcher: LauncherTable | None = None
    timing: Timing | None = None
    final_evaluation: dict[str, Any] = Field(default_factory=dict)

    @property
    def launcher_table(self) -> dict[str, Any] | None:
        """The ``[launcher]`` table as written (``None`` when the file has none)."""
        return self.launcher.model_dump() if self.launcher is not None else None

    @field_validator("name")
    @classmethod
    def _one_folder(cls, name: str | None) -> str | None:
        if name is not None and not is_folder_name(name):
            raise ValueError(f"an ablation's name is its output folder under runs_dir: {FOLDER_NAME_RULE}")
        return name

    @model_validator(mode="after")
    def _seeds_unique(self) -> AblationFile:
        for seeds in [self.seeds, *(v.seeds for v in self.variant if v.seeds)]:
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"seeds {seeds} repeat a seed; each repeat needs its own")
        return self


@dataclass(frozen=True)
class Cell:
    """One run of the ablation: a cell (``group``) under one seed."""

    name: str
    changes: dict[str, Any]
    seed: int
    sets: tuple[str, ...]
    group: str = ""


@dataclass
class Ablation:
    path: Path
    spec: AblationFile
    base_files: list[Path]
    cells: list[Cell]
    out: Path
    resolved: dict[str, ResolvedSettings] = field(default_factory=dict)
    #: ``--set`` overrides given on the command line (passed on to each job of ``--jobs``)
    extra_sets: tuple[str, ...] = ()

    @property
    def groups(self) -> list[str]:
        """The cells' names in file order (what ``[[compare]]`` refers to)."""
        return list(dict.fromkeys(c.group for c in self.cells))


def _assignment(key: str, value: Any) -> str:
    return f"{key}={format_value(value)}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,-]+", "_", text).strip("_")[:120] or "cell"


def _problems(exc: ValidationError, path: Path) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            where = loc.rsplit(".", 1)
            if len(where) == 1:
                known = list(AblationFile.model_fields)
            else:
                tables = {"compare": Compare, "variant": Variant, "threshold": Threshold, "timing": Timing}
                parent = tables.get(where[0].split(".")[0])
                known = list(parent.model_fields) if parent else []
            hint = " (verdicts are computed by the report, not written in the file)" if loc.endswith("verdict") else ""
            nearest = did_you_mean(where[-1], known)
            problems.append(f"unknown key {loc!r} in {path}{nearest}; allowed: {', '.join(known)}{hint}")
        else:
            problems.append(f"{loc or 'file'} in {path}: {err['msg']}")
    return problems


def ablation_json_schema() -> dict[str, Any]:
    """JSON Schema of an ablation file, from :class:`AblationFile` (what
    ``modiff settings schema --ablation`` prints; each key is described in
    docs/ablations.md)."""
    schema = AblationFile.model_json_schema()
    schema["title"] = "modiff ablation file"
    return schema


def read_ablation(path: str | Path, extra_sets: tuple[str, ...] = ()) -> Ablation:
    """Parse an ablation file and expand its runs (nothing is validated against plugins yet)."""
    path = Path(path)
    if not path.is_file():
        raise ModiffError(f"ablation file {path} does not exist")
    try:
        with nesting_refused(str(path)):
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"{path} is not valid TOML: {exc}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError([f"cannot read ablation file {path} (a TOML text file is expected): {exc}"]) from None
    try:
        spec = AblationFile.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(_problems(exc, path)) from None
    bases = [spec.base] if isinstance(spec.base, str) else spec.base
    base_files = [(path.parent / b).resolve() for b in bases]
    for key, values in spec.grid.items():
        if not values:
            raise SettingsError([f"[grid] {key!r} in {path} has no values"])
    common = tuple(_assignment(k, v) for k, v in spec.set.items()) + tuple(extra_sets)
    keys = list(spec.grid)
    variants = spec.variant or [Variant(name="")]
    cells = []
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        for variant in variants:
            changes = dict(zip(keys, combo)) | dict(variant.set)
            parts = [variant.name] if variant.name else []
            parts += [f"{k.split('.')[0]}={v}" if k.endswith(".plugin") else f"{k}={v}" for k, v in zip(keys, combo)]
            group = _slug(",".join(parts) or "base")
            seeds = variant.seeds or spec.seeds
            for seed in seeds:
                name = f"{group},seed={seed}" if len(seeds) > 1 else group
                seed_sets = tuple(_assignment(k, seed) for k in spec.seed_settings)
                sets = common + tuple(_assignment(k, v) for k, v in changes.items()) + seed_sets
                cells.append(Cell(name, changes, seed, (*sets, f"run.name={json.dumps(name)}"), group))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise SettingsError([f"{path}: two cells have the same name; give the variants distinct names"])
    if spec.name is None and not is_folder_name(path.stem):
        raise SettingsError(
            [f"{path}: its file name cannot name the output folder; set name = \"...\" ({FOLDER_NAME_RULE})"]
        )
    ablation = Ablation(path, spec, base_files, cells, Path(spec.name or path.stem), extra_sets=tuple(extra_sets))
    _check_references(ablation)
    return ablation


def _check_references(ablation: Ablation) -> None:
    """``[[compare]]`` names existing cells, and the cost metric has a threshold."""
    spec, path, groups = ablation.spec, ablation.path, ablation.groups
    problems = []
    for i, c in enumerate(spec.compare):
        for side in ("a", "b"):
            name = getattr(c, side)
            if name not in groups:
                close = difflib.get_close_matches(name, groups, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(
                    f"compare[{i}].{side} = {name!r} in {path} is not a cell{hint} (cells: {', '.join(groups)})"
                )
        if c.a == c.b:
            problems.append(f"compare[{i}] in {path} compares {c.a!r} with itself")
        if COST in c.metrics and spec.threshold is None:
            problems.append(f"compare[{i}] in {path} asks for {COST!r} but the file has no [threshold] (metric, value)")
    if problems:
        raise SettingsError(problems)


def validate(ablation: Ablation) -> None:
    """Resolve every run; report every problem of every run together."""
    problems: list[str] = []
    for cell in ablation.cells:
        try:
            resolved = load(ablation.base_files, list(cell.sets))
            if resolved.trackers:  # only a tracked run carries them: an untracked run's settings read as before
                resolved = load(ablation.base_files, [*cell.sets, *tracking_sets(ablation, cell)])
            ablation.resolved[cell.name] = resolved
            problems.extend(f"cell {cell.name!r}: {p}" for p in _final_evaluation_problems(ablation, resolved))
        except SettingsError as exc:
            problems.extend(f"cell {cell.name!r}: {p}" for p in exc.problems)
        except ModiffError as exc:
            problems.append(f"cell {cell.name!r}: {exc}")
    if problems:
        raise SettingsError(problems)


def final_evaluator(ablation: Ablation, resolved: ResolvedSettings) -> tuple[str, dict[str, Any]] | None:
    """The evaluator of a run's final evaluation and its settings: the run's own,
    with the file's ``[final_evaluation]`` changes (more prompts than the cheap
    evaluations along the learning curve); ``None`` without either."""
    component = resolved.components.get("evaluator")
    if component is None or not ablation.spec.final_evaluation:
        return None
    return component.name, {**component.params.model_dump(), **ablation.spec.final_evaluation}


def _final_evaluation_problems(ablation: Ablation, resolved: ResolvedSettings) -> list[str]:
    """``[final_evaluation]`` checked by the run's evaluator before anything trains."""
    final = final_evaluator(ablation, resolved)
    if ablation.spec.final_evaluation and resolved.components.get("evaluator") is None:
        return [f"[final_evaluation] in {ablation.path} needs an [evaluator] in the run's settings"]
    if final is None:
        return []
    registration = resolved.components["evaluator"].registration
    try:
        registration.validate(final[1])
    except SettingsError as exc:
        return [f"[final_evaluation] in {ablation.path}: {p}" for p in exc.problems]
    except ValidationError as exc:
        return [
            f"[final_evaluation] in {ablation.path}: {'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        ]
    return []


def tracking_sets(ablation: Ablation, cell: Cell) -> tuple[str, ...]:
    """What tells a run's trackers where it stands in the grid (``[track]``): the
    ablation's name as their group (in MLflow, one experiment for the grid) and
    the cell and the seed as tags, so a tracker's compare view lines the runs up."""
    return (
        _assignment("track.group", str(ablation.out)),
        _assignment("track.tags.variant", cell.group),
        _assignment("track.tags.seed", str(cell.seed)),
    )


def output_dir(ablation: Ablation) -> Path:
    first = next(iter(ablation.resolved.values()), None)
    runs_dir = Path(first.run.runs_dir) if first is not None else Path("runs")
    return runs_dir / ablation.out


def cell_record_path(out: Path, cell: Cell) -> Path:
    return out / cell.name / "cell.json"


#: Where an ablation keeps the stages its runs share (inside its output folder).
STAGES = ".stages"


def run_ablation(
    ablation: Ablation,
    *,
    progress: bool = True,
    log: Any = print,
    jobs: int | None = None,
    launcher: str | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every run not finished yet, then write the report.

    The runs go to ``launcher`` (``--launcher``, else the file's ``[launcher]``
    table, else ``local``; :mod:`modiff.launching`). ``local`` without ``jobs``
    (or with 1) trains them one after the other in this process."""
    if not ablation.resolved:
        validate(ablation)
    out = output_dir(ablation)
    name = chosen_name(ablation.spec.launcher_table, launcher)
    in_process = name == DEFAULT_LAUNCHER and (jobs or 1) == 1
    table = ablation.spec.launcher_table
    if not in_process:  # before anything is written: a mistyped launcher is a one-line error
        launcher_settings(table, launcher, str(ablation.path))
    out.mkdir(parents=True, exist_ok=True)
    _set_aside_changed(ablation, out, log)
    _evaluate_again_if_changed(ablation, out, log)
    if ablation.spec.timing is not None:
        _time_steps(ablation, out, log)
    records: list[dict[str, Any]] = []
    try:
        with shown_progress.quiet(not progress):  # the runs' own sampling and evaluation bars too
            if in_process:
                _run_all(ablation, out, records, progress=progress, log=log)
            else:
                _run_launched(ablation, out, records, table=table, override=launcher, jobs=jobs, log=log)
    except (KeyboardInterrupt, _interrupted()) as exc:  # stop the grid, keep what finished, say how to go on
        rewrite_report(ablation, out, records)
        stop = ModiffError(
            f"interrupted ({str(exc) or 'Ctrl-C'}); finished runs are kept and the report shows them. "
            f"Run the same `modiff ablate {ablation.path}` again to continue."
        )
        stop.exit_code = 130  # as a Ctrl-C anywhere else
        raise stop from None
    records.sort(key=lambda r: [c.name for c in ablation.cells].index(r["name"]))
    rewrite_report(ablation, out, records)
    return records


def _evaluate_again_if_changed(ablation: Ablation, out: Path, log: Any) -> None:
    """A finished run evaluated under another ``[final_evaluation]`` than the file's
    now is not finished for this file: its record goes, so the run is taken up
    again, which trains nothing (every stage is in its checkpoint) and evaluates
    it as the file asks."""
    for cell in ablation.cells:
        record = _finished(out, cell)
        if record is not None and record.get("final_evaluation", {}) != ablation.spec.final_evaluation:
            cell_record_path(out, cell).unlink()
            log(f"{cell.name}: evaluated again: [final_evaluation] changed (its training is kept)")


#: The interleaved step timing of an ablation with ``[timing]`` (in its output folder).
TIMING = "timing.json"


def _time_steps(ablation: Ablation, out: Path, log: Any) -> None:
    """Time every cell's training step interleaved in this process (``[timing]``),
    unless ``timing.json`` already holds the same cells under the same settings
    and timing options: the ratios are only comparable within one measurement,
    so a changed cell means measuring them all again."""
    # the timing builds models (torch): it loads only for a file with [timing]
    from .step_timing import measure

    timing = ablation.spec.timing
    assert timing is not None
    first = {c.group: c for c in reversed(ablation.cells)}  # each cell's first run: the seed changes no step's cost
    cells = {g: ablation.resolved[first[g].name] for g in ablation.groups}
    key = {"rounds": timing.rounds, "steps": timing.steps, "cells": {g: cell_digest(r) for g, r in cells.items()}}
    path = out / TIMING
    if path.is_file() and json.loads(path.read_text()).get("key") == key:
        return
    log(f"timing every cell's training step, interleaved ({len(cells)} cells, {timing.rounds} rounds)")
    result = measure(cells, rounds=timing.rounds, steps=timing.steps)
    for name, error in result["errors"].items():
        log(f"{name}: not timed: {error}")
    atomic_write_json(path, {"key": key, **result})


def rewrite_report(ablation: Ablation, out: Path, records: list[dict[str, Any]]) -> None:
    """Write the report of the runs recorded so far (in file order), the rest
    named as not finished. The driver calls it whenever a run ends, so a grid
    stopped or still running halfway already has a valid report; each file is
    replaced atomically, so a reader never sees half of one."""
    position = {c.name: i for i, c in enumerate(ablation.cells)}
    ordered = sorted(records, key=lambda r: position.get(r["name"], len(position)))
    write_report(analyse(ablation, ordered), ablation.path, out, ordered)


def _interrupted() -> type[BaseException]:
    # Training (torch) loads when a run starts, not when an ablation file is read or a job boots.
    from .training import TrainingInterrupted

    return TrainingInterrupted


def _set_aside_changed(ablation: Ablation, out: Path, log: Any) -> None:
    """Before anything is skipped: move aside every run started under other settings
    than its cell's now (a variant edited since), so that it is trained again, not
    reused (:mod:`modiff.cell_settings`). A run another process is writing is left
    to the wait for it; :func:`run_cell` checks again before it trains."""
    for cell in ablation.cells:
        folder = out / cell.name
        if RunDir(folder).writer() is not None:
            continue
        aside = set_aside_if_changed(folder, ablation.resolved[cell.name])
        if aside is not None:
            log(f"{cell.name}: trained again: its settings changed (old run kept at {aside})")


def _finished(out: Path, cell: Cell) -> dict[str, Any] | None:
    """The record of a run that finished earlier, else ``None``."""
    path = cell_record_path(out, cell)
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("status") == "done":
            return record
    return None


def _finished_by_its_writer(
    out: Path, cell: Cell, label: str, log: Callable[[str], None], records: list[Any], watch: Any
) -> bool:
    """After waiting for another process that was writing ``cell``'s run: whether
    it finished the run (its record joins ``records``), so the driver trains
    nothing; both schedulers, one at a time and ``--jobs``, ask here."""
    record = _finished(out, cell)
    if record is None:
        return False
    log(f"{label}: finished by the process that was writing it")
    records.append(record)
    watch.ended(cell.name)
    return True


def _announce(out: Path, cell: Cell, i: int, total: int, log: Any, clock: shown_progress.RunsClock) -> None:
    """The line that starts a run, with the runs this call trained so far and the time left at their pace."""
    path = cell_record_path(out, cell)
    meter = clock.meter()
    pace = f" ({meter})" if meter else ""
    if path.is_file():
        error = json.loads(path.read_text()).get("error", "?")
        log(f"[{i}/{total}] {cell.name}: failed earlier ({error}), retrying{pace}")
    else:
        log(f"[{i}/{total}] {cell.name}{pace}")


def _watch_started(watch: shown_progress.GridWatch, ablation: Ablation, cell: Cell, out: Path) -> None:
    """Show ``cell``'s run on its status line, with the steps of each of its stages."""
    train = ablation.resolved[cell.name].train
    steps = {"encoder": train.encoder.steps, "text_embedder": train.text_embedder.steps, "denoiser": train.steps}
    watch.started(cell.name, RunDir(out / cell.name).metrics, steps)


def run_and_record(ablation: Ablation, cell: Cell, out: Path, *, progress: bool) -> dict[str, Any]:
    """Train and evaluate one run and write its record (what one job of a launcher does).

    Returns the record as written (keys sorted, as JSON holds it), the one a
    driver reads back from a job or a later run of the grid finds: the report
    of a run trained in this process and of one trained elsewhere or earlier
    then list the same metrics in the same order."""
    record = run_cell(ablation, cell, out, progress=progress)
    path = cell_record_path(out, cell)
    atomic_write_json(path, record)
    return json.loads(path.read_text())


def _run_all(ablation: Ablation, out: Path, records: list[dict[str, Any]], *, progress: bool, log: Any) -> None:
    total = len(ablation.cells)
    clock = shown_progress.RunsClock(sum(_finished(out, cell) is None for cell in ablation.cells))
    watch = shown_progress.GridWatch(total, total - clock.total, log)
    try:
        _run_each(ablation, out, records, progress=progress, log=watch.log, clock=clock, watch=watch)
    finally:
        watch.close()


def _run_each(
    ablation: Ablation,
    out: Path,
    records: list[dict[str, Any]],
    *,
    progress: bool,
    log: Any,
    clock: shown_progress.RunsClock,
    watch: shown_progress.GridWatch,
) -> None:
    total = len(ablation.cells)
    for i, cell in enumerate(ablation.cells, 1):
        record = _finished(out, cell)
        if record is not None:
            log(f"[{i}/{total}] {cell.name}: finished earlier, skipped")
            records.append(record)
            continue
        label = f"[{i}/{total}] {cell.name}"
        while _still_written(RunDir(out / cell.name), label, log, waiting=set()):
            time.sleep(POLL_SECONDS)
        if _finished_by_its_writer(out, cell, label, log, records, watch):
            continue
        _announce(out, cell, i, total, log, clock)
        _watch_started(watch, ablation, cell, out)
        with watch.polling():
            record = run_and_record(ablation, cell, out, progress=progress)
        watch.ended(cell.name)
        clock.finished()
        if record["status"] != "done":
            log(f"[{i}/{total}] {cell.name}: failed: {record['error']}")
        records.append(record)
        rewrite_report(ablation, out, records)


class _Driver:
    """The ablation's side of :func:`modiff.grid_runner.run_grid`: what a run
    is (its folder, its record, its line on the display) and the report
    rewritten whenever one ends."""

    def __init__(self, ablation: Ablation, out: Path, records: list[dict[str, Any]], log: Any, todo: list[Cell]):
        self.ablation, self.out, self.records = ablation, out, records
        self.cells = {c.name: c for c in ablation.cells}
        self.order = {c.name: i for i, c in enumerate(ablation.cells, 1)}
        self.total = len(ablation.cells)
        self.clock = shown_progress.RunsClock(len(todo))
        self.watch = shown_progress.GridWatch(self.total, self.total - len(todo), log)
        self.log = self.watch.log
        self.waiting: set[str] = set()
        self.submitted: dict[str, float] = {}

    def label(self, name: str) -> str:
        return f"[{self.order[name]}/{self.total}] {name}"

    def tick(self) -> None:
        self.watch.poll()

    def ready(self, run: PendingRun) -> bool | None:
        cell = self.cells[run.name]
        if _still_written(RunDir(self.out / cell.name), self.label(run.name), self.log, self.waiting):
            return False
        if _finished_by_its_writer(self.out, cell, self.label(run.name), self.log, self.records, self.watch):
            return None
        _announce(self.out, cell, self.order[cell.name], self.total, self.log, self.clock)
        return True

    def started(self, run: PendingRun, handle: LaunchedRun) -> None:
        self.submitted[run.name] = time.time()
        _watch_started(self.watch, self.ablation, self.cells[run.name], self.out)

    def ended(self, run: PendingRun, handle: LaunchedRun, code: int) -> None:
        cell = self.cells[run.name]
        record = _finished(self.out, cell) or _failed_job(self.out, cell, code, run.job.log_path, handle.error)
        # where it ran and when it was handed over (a launcher's start-up cost: started_at - submitted_at)
        record["launch"] = {"node": handle.node, "submitted_at": self.submitted.get(run.name)}
        atomic_write_json(cell_record_path(self.out, cell), record)
        self.records.append(record)
        self.watch.ended(run.name)
        self.clock.finished()
        verdict = "done" if record["status"] == "done" else f"failed: {record.get('error')}"
        self.log(f"{self.label(run.name)}: {verdict}")
        rewrite_report(self.ablation, self.out, self.records)


def _run_launched(
    ablation: Ablation,
    out: Path,
    records: list[dict[str, Any]],
    *,
    table: dict[str, Any] | None,
    override: str | None,
    jobs: int | None,
    log: Any,
) -> None:
    """Every run not finished yet, each a ``modiff ablate --run NAME`` job that
    the chosen launcher places (this machine's processes, a Ray cluster...);
    the scheduling is :func:`modiff.grid_runner.run_grid`'s. The launcher is
    built once the driver's display is up, so what it says on its own
    (``LaunchContext.log``) goes where the driver's lines go, and it is
    closed on every exit."""
    todo: list[Cell] = []
    for i, cell in enumerate(ablation.cells, 1):
        record = _finished(out, cell)
        if record is not None:
            log(f"[{i}/{len(ablation.cells)}] {cell.name}: finished earlier, skipped")
            records.append(record)
        else:
            todo.append(cell)
    driver = _Driver(ablation, out, records, log, todo)
    launcher: Launcher | None = None
    try:
        launcher = build_launcher(table, override, jobs=jobs, runs_dir=out, source=str(ablation.path),
                                  log=driver.log)
        threads = launcher.cpus_per_run
        cache = StageCache(out / STAGES) if ablation.spec.share_stages else None
        logs = out / ".logs"
        logs.mkdir(parents=True, exist_ok=True)
        pending = [
            PendingRun(
                cell.name,
                _job(ablation, cell, threads, logs / f"{cell.name}.log"),
                # the keys the job will compute: with its thread count, not this driver's
                frozenset(stage_keys(ablation.resolved[cell.name], threads=threads).values()) if cache else frozenset(),
            )
            for cell in todo
        ]
        run_grid(launcher, pending, driver, cache.must_wait if cache else None)
    finally:
        try:
            if launcher is not None:
                launcher.close()
        finally:
            driver.watch.close()


def _still_written(run: RunDir, label: str, log: Any, waiting: set[str]) -> bool:
    """Whether a live process other than this driver's jobs still writes ``run``
    (a job of a killed driver, or a `modiff train` of the user's): such a run is
    waited for, never started beside it and recorded as failed. Says so once."""
    writer = run.writer()
    if writer is None:
        return False
    if label not in waiting:
        waiting.add(label)
        log(f"{label}: waiting for {writer}, which is writing it")
    return True


def _job(ablation: Ablation, cell: Cell, threads: int, log_path: Path) -> RunJob:
    """The job that trains ``cell``'s run with ``threads`` threads, on any launcher."""
    command = [sys.executable, "-m", "modiff", "ablate", str(ablation.path), "--quiet",
               "--run", cell.name, "--threads", str(threads)]
    for extra in ablation.extra_sets:
        command += ["--set", extra]
    device = ablation.resolved[cell.name].run.device
    return RunJob(
        name=cell.name,
        argv=tuple(command),
        env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
        cpus=threads,
        gpus=1 if device.startswith("cuda") else 0,
        log_path=log_path,
        cwd=Path.cwd(),
    )


def _failed_job(out: Path, cell: Cell, code: int | None, log_path: Path, error: str | None = None) -> dict[str, Any]:
    """A job that ended without writing a finished record."""
    path = cell_record_path(out, cell)
    if path.is_file():
        return json.loads(path.read_text())
    tail = log_path.read_text(errors="replace")[-1500:] if log_path.is_file() else ""
    record = {"name": cell.name, "group": cell.group, "changes": cell.changes, "seed": cell.seed,
              "status": "failed", "error": error or f"the run's process exited with code {code}; see {log_path}",
              "traceback": tail}
    atomic_write_json(path, record)
    return record


def _learning_curve(run: RunDir) -> list[dict[str, Any]]:
    """The run's evaluations during training: step, training seconds, flat numbers."""
    return [
        {"step": m["step"], "train_seconds": m["train_seconds"], "eval": m["eval"]}
        for m in run.read_metrics()
        if m.get("kind") == "eval" and m.get("stage") == "denoiser"
    ]


def run_cell(ablation: Ablation, cell: Cell, out: Path, *, progress: bool) -> dict[str, Any]:
    # Torch and the trainer load when a run starts, not when an ablation file is read or a job boots.
    from .images import labelled_grid, save_png
    from .workflows import evaluate_run, save_evaluation, train_run

    resolved = ablation.resolved[cell.name]
    run = RunDir(out / cell.name)
    record: dict[str, Any] = {"name": cell.name, "group": cell.group, "changes": cell.changes, "seed": cell.seed}
    set_aside_if_changed(run.path, resolved)  # never resume a run begun under other settings
    record["settings_digest"] = cell_digest(resolved)
    record["final_evaluation"] = dict(ablation.spec.final_evaluation)  # what its evaluation was asked for
    aside = kept_aside(run.path)
    if aside:  # what the report says: this cell was trained again, its old runs are kept there
        record["superseded"] = [str(p.relative_to(out)) for p in aside]
    wall = time.perf_counter()
    record["started_at"] = time.time()
    cache = StageCache(out / STAGES) if ablation.spec.share_stages else None
    try:
        started = time.perf_counter()
        if cache is not None:
            cache.start(run, resolved)
        shared = started_from_stages(run)  # also when a resume carries on a run the cache started
        if shared is not None:
            record["shared_stages"] = shared

        def keep(stage: str, checkpoint: Any) -> None:
            if cache is not None:
                cache.keep(run, stage, checkpoint, resolved)

        pipeline = train_run(resolved, run, resume=run.exists(), progress=progress, on_stage_done=keep)
        # The trainer's own clock: every stage, without evaluation or sampling, across resumes.
        record["train_seconds"] = run.train_seconds() or time.perf_counter() - started
        record["parameters"] = {
            role: sum(p.numel() for p in m.parameters()) for role, m in pipeline.components.modules()
        }
        if pipeline.task.generates_from_prompts:  # a comparison grid needs images made from prompts alone
            prompts = ablation.spec.prompts or [pipeline.components.dataset[i].caption for i in range(4)]
            n = ablation.spec.images_per_prompt
            expanded = [p for p in prompts for _ in range(n)]
            t0 = time.perf_counter()
            images = pipeline.generate(expanded, seed=cell.seed)
            record["seconds_per_image"] = (time.perf_counter() - t0) / len(expanded)
            save_png(labelled_grid(images, expanded, cols=n * min(4, len(prompts))), run.path / "comparison.png")
            record["grid"] = str((run.path / "comparison.png").relative_to(out))
        if pipeline.components.evaluator is not None:
            final = final_evaluator(ablation, resolved)  # [final_evaluation]: more prompts than along the curve
            result = evaluate_run(pipeline, evaluator=final[0], settings=final[1]) if final else evaluate_run(pipeline)
            save_evaluation(run, result)
            record["evaluation"] = {k: v for k, v in result.items() if k != "per_prompt"}
        record["status"] = "done"
    except _interrupted():
        raise  # a stop, not a failure: the run resumes from its checkpoint next time
    except Exception as exc:  # noqa: BLE001 (a failed run is reported, not fatal)
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ModiffError):
            record["traceback"] = traceback.format_exc(limit=8)
    record["wall_seconds"] = time.perf_counter() - wall
    record["ended_at"] = time.time()
    metrics = run.read_metrics() if run.metrics.is_file() else []
    record["losses"] = [(m["step"], m["loss"]) for m in metrics if m.get("stage") == "denoiser" and "loss" in m]
    record["curve"] = _learning_curve(run) if run.metrics.is_file() else []
    return record


# ---------------------------------------------------------------------------
# From runs to numbers: per cell and per comparison
# ---------------------------------------------------------------------------


def human_name(metric: str, spec: AblationFile) -> str:
    """The file's name for a metric, else the key made readable."""
    if metric in spec.metrics:
        return spec.metrics[metric]
    if metric == COST and spec.threshold is not None:
        t = spec.threshold
        return f"seconds to {human_name(t.metric, spec)} ≥ {t.value:g}"
    return metric.removesuffix("_accuracy").replace("_", " ")


def lower_is_better(metric: str) -> bool:
    """Costs (seconds, losses) go down; accuracies and IoU go up."""
    return metric == COST or "seconds" in metric or "loss" in metric


def _items(records: list[dict[str, Any]], metric: str) -> list[stats.SeedItems]:
    out = []
    for r in records:
        per_item = (r.get("evaluation") or {}).get("per_item") or {}
        values = (per_item.get("metrics") or {}).get(metric)
        if values is not None:
            out.append(stats.seed_items(r["seed"], per_item["ids"], values))
    return sorted(out, key=lambda s: s.seed)


def _flat(records: list[dict[str, Any]], metric: str) -> list[float]:
    values = [(r.get("evaluation") or {}).get(metric) for r in records]
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def metric_keys(records: list[dict[str, Any]]) -> list[str]:
    """Every accuracy-like flat number of the evaluations, in first-seen order."""
    seen: list[str] = []
    for r in records:
        for k, v in (r.get("evaluation") or {}).items():
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if number and ("accuracy" in k or "iou" in k.lower()) and k not in seen:
                seen.append(k)
    return seen


def _cost(records: list[dict[str, Any]], threshold: Threshold) -> stats.Cost:
    reached, budgets = [], []
    for r in sorted(records, key=lambda r: r["seed"]):
        curve = [
            (p["train_seconds"], p["eval"][threshold.metric])
            for p in r.get("curve") or []
            if isinstance(p["eval"].get(threshold.metric), (int, float))
        ]
        reached.append(stats.seconds_to_reach(curve, threshold.value))
        budgets.append(float(r.get("train_seconds") or (curve[-1][0] if curve else 0.0)))
    return stats.Cost(tuple(reached), tuple(budgets))


def _estimate(records: list[dict[str, Any]], metric: str, threshold: Threshold | None) -> dict[str, Any] | None:
    """A cell's value of one metric: with a bootstrap interval from per-item
    results, else the mean of the flat numbers; the cost with a t interval."""
    if metric == COST:
        if threshold is None or not records:
            return None
        cost = _cost(records, threshold)
        summary = cost.summary()
        reached = sum(r is not None for r in cost.reached)
        out: dict[str, Any] = {"reached": reached, "seeds": len(cost.reached), "per_seed": list(cost.reached)}
        if summary is not None:
            out.update(summary.as_dict())
        return out
    items = _items(records, metric)
    if items:
        est = stats.bootstrap(items)
        return None if est is None else {**est.as_dict(), "seeds": len(items)}
    flat = _flat(records, metric)
    return {"value": sum(flat) / len(flat), "seeds": len(flat)} if flat else None


def _compare(
    a: list[dict[str, Any]], b: list[dict[str, Any]], metric: str, threshold: Threshold | None
) -> stats.Comparison:
    if metric == COST:
        assert threshold is not None  # read_ablation checked it
        if not a or not b:
            return stats.Comparison(None, stats.NOT_SEPARABLE, note="a cell has no finished run")
        return stats.compare_costs(_cost(a, threshold), _cost(b, threshold))
    ia, ib = _items(a, metric), _items(b, metric)
    if not ia or not ib:
        return stats.Comparison(None, stats.NOT_SEPARABLE, note=f"no per-item results of {metric!r} to compare")
    return stats.compare(ia, ib, higher_is_better=not lower_is_better(metric))


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def analyse(ablation: Ablation, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the report shows, as plain data: per cell the estimates of every
    metric, per ``[[compare]]`` the differences and computed verdicts."""
    spec = ablation.spec
    done = [r for r in records if r.get("status") == "done"]
    by_group: dict[str, list[dict[str, Any]]] = {g: [] for g in ablation.groups}
    for r in done:
        by_group.setdefault(r.get("group") or r["name"], []).append(r)
    all_metrics = metric_keys(done)
    compact = list(spec.metrics) or list(dict.fromkeys(m for c in spec.compare for m in c.metrics if m != COST))
    if not compact:
        compact = all_metrics[:4]
    if spec.threshold is not None and COST not in compact:
        compact.append(COST)
    cells = []
    for group, runs in by_group.items():
        expected = [c for c in ablation.cells if c.group == group]
        failed = [r for r in records if (r.get("group") or r["name"]) == group and r.get("status") != "done"]
        params = runs[0].get("parameters") if runs else None
        cells.append(
            {
                "name": group,
                "changes": expected[0].changes if expected else {},
                "runs_done": len(runs),
                "runs": len(expected),
                "failed": [{"name": r["name"], "error": r.get("error", "")} for r in failed],
                "metrics": {m: _estimate(runs, m, spec.threshold) for m in dict.fromkeys([*compact, *all_metrics])},
                "train_seconds": _mean([r.get("train_seconds") for r in runs]),
                "seconds_per_image": _mean([r.get("seconds_per_image") for r in runs]),
                "wall_seconds": sum(r.get("wall_seconds") or 0.0 for r in runs),
                "parameters": sum(params.values()) if params else None,
                # its denoiser steps: the load-free seconds of a run are read at its last step
                "steps": ablation.resolved[expected[0].name].train.steps
                if expected and expected[0].name in ablation.resolved else None,
            }
        )
    comparisons = []
    for c in spec.compare:
        rows = []
        for m in c.metrics:
            result = _compare(by_group.get(c.a, []), by_group.get(c.b, []), m, spec.threshold)
            rows.append({"metric": m, "name": human_name(m, spec), **result.as_dict()})
        comparisons.append({"claim": c.claim, "a": c.a, "b": c.b, "results": rows})
    return {
        "title": f"Ablation {ablation.out.name}",
        # runs trained again because their cell's settings changed, with where the old runs are kept
        "retrained": [{"name": r["name"], "kept_at": r["superseded"]} for r in records if r.get("superseded")],
        "file": str(ablation.path),
        "base": [str(b) for b in ablation.base_files],
        "seeds": spec.seeds,
        "threshold": None if spec.threshold is None else spec.threshold.model_dump(),
        "compact": compact,
        "all_metrics": all_metrics,
        "names": {m: human_name(m, spec) for m in dict.fromkeys([*compact, *all_metrics])},
        "cells": cells,
        "comparisons": comparisons,
        "evaluator_error": _evaluator_error(done),
        "runs": len(records),
        "runs_done": len(done),
        # the runs with no record yet: a report written while the grid runs (or after a stop) names them
        "pending": [c.name for c in ablation.cells if c.name not in {r["name"] for r in records}],
        "wall_seconds": sum(r.get("wall_seconds") or 0.0 for r in records),
        "span_seconds": _span(records),
        "timing": _timing(ablation),
    }


def _evaluator_error(records: list[dict[str, Any]]) -> dict[str, float]:
    """Per metric, the largest error the runs' evaluators state they were measured
    to make (:func:`modiff.stats.evaluator_error`): a difference between cells
    smaller than it may be the instrument's, not the cells'."""
    out: dict[str, float] = {}
    for r in records:
        for metric, rate in stats.evaluator_error(r.get("evaluation")).items():
            out[metric] = max(rate, out.get(metric, 0.0))
    return out


def _span(records: list[dict[str, Any]]) -> float | None:
    """Seconds from the first run's start to the last run's end (the grid's wall
    time when its runs went side by side); ``None`` unless every run says when."""
    starts = [r.get("started_at") for r in records]
    ends = [r.get("ended_at") for r in records]
    if not records or None in starts or None in ends:
        return None
    return float(max(ends) - min(starts))


def _timing(ablation: Ablation) -> dict[str, Any] | None:
    """Each cell's step cost relative to the first cell's, from the interleaved
    timing (``[timing]``; :func:`modiff.step_timing.relative_costs`), or ``None``."""
    if ablation.spec.timing is None or not ablation.resolved:
        return None
    path = output_dir(ablation) / TIMING
    if not path.is_file():
        return None
    # beside it in step_timing, which loads torch: only for a file with [timing]
    from .step_timing import relative_costs

    timing = json.loads(path.read_text())
    costs = relative_costs(timing, ablation.groups[0])
    return {**costs, "rounds": timing.get("rounds"), "errors": timing.get("errors") or {}} if costs else None
