"""Ablations: a base settings file, a grid of changes, one report.

An ablation file::

    base = "../configs/demo.toml"   # relative to this file
    name = "seeds"                  # output folder under runs_dir (default: file stem)
    seeds = [0, 1]                  # repeats; every cell runs once per seed
    prompts = ["a red circle", ...] # shown side by side for every cell (optional)

    [set]                           # applied to every cell: the shared budget
    "train.steps" = 1500

    [grid]                          # full product of these values
    "text_embedder.plugin" = ["word2vec", "clip"]

    [[variant]]                     # and/or named variants, each a set of changes
    name = "pixel"
    set = { "encoder.plugin" = "identity" }

Cells are the product of the grid, times the variants (one empty variant if
none), times the seeds. Every cell is resolved and validated before anything
trains; a finished cell is skipped when the ablation runs again.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ModiffError, SettingsError
from .runs import RunDir, atomic_write_json
from .settings import ResolvedSettings, load
from .toml_io import format_value


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    set: dict[str, Any] = Field(default_factory=dict)


class AblationFile(BaseModel):
    """The schema of an ablation file."""

    model_config = ConfigDict(extra="forbid")

    base: str | list[str]
    name: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0])
    prompts: list[str] = Field(default_factory=list)
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variant: list[Variant] = Field(default_factory=list)
    images_per_prompt: int = Field(2, ge=1)


@dataclass(frozen=True)
class Cell:
    """One run of the ablation."""

    name: str
    changes: dict[str, Any]
    seed: int
    sets: tuple[str, ...]


@dataclass
class Ablation:
    path: Path
    spec: AblationFile
    base_files: list[Path]
    cells: list[Cell]
    out: Path
    resolved: dict[str, ResolvedSettings] = field(default_factory=dict)


def _assignment(key: str, value: Any) -> str:
    return f"{key}={format_value(value)}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:120] or "cell"


def read_ablation(path: str | Path, extra_sets: tuple[str, ...] = ()) -> Ablation:
    """Parse an ablation file and expand its cells (nothing is validated against plugins yet)."""
    path = Path(path)
    if not path.is_file():
        raise ModiffError(f"ablation file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"{path} is not valid TOML: {exc}"]) from None
    try:
        spec = AblationFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key {loc!r} in {path}; allowed: {', '.join(AblationFile.model_fields)}")
            else:
                problems.append(f"{loc} in {path}: {err['msg']}")
        raise SettingsError(problems) from None
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
            for seed in spec.seeds:
                changes = dict(zip(keys, combo)) | dict(variant.set)
                parts = [variant.name] if variant.name else []
                parts += [f"{k.split('.')[0]}={v}" if k.endswith(".plugin") else f"{k}={v}" for k, v in zip(keys, combo)]
                if len(spec.seeds) > 1:
                    parts.append(f"seed={seed}")
                name = _slug(",".join(parts) or "base")
                sets = common + tuple(_assignment(k, v) for k, v in changes.items()) + (f"run.seed={seed}", f"run.name={json.dumps(name)}")
                cells.append(Cell(name, changes, seed, sets))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise SettingsError([f"{path}: two cells have the same name; give the variants distinct names"])
    out_name = spec.name or path.stem
    return Ablation(path, spec, base_files, cells, Path(out_name))


def validate(ablation: Ablation) -> None:
    """Resolve every cell; report every problem of every cell together."""
    problems: list[str] = []
    for cell in ablation.cells:
        try:
            ablation.resolved[cell.name] = load(ablation.base_files, list(cell.sets))
        except SettingsError as exc:
            problems.extend(f"cell {cell.name!r}: {p}" for p in exc.problems)
        except ModiffError as exc:
            problems.append(f"cell {cell.name!r}: {exc}")
    if problems:
        raise SettingsError(problems)


def output_dir(ablation: Ablation) -> Path:
    first = next(iter(ablation.resolved.values()), None)
    runs_dir = Path(first.run.runs_dir) if first is not None else Path("runs")
    return runs_dir / ablation.out


def cell_record_path(out: Path, cell: Cell) -> Path:
    return out / cell.name / "cell.json"


def run_ablation(ablation: Ablation, *, progress: bool = True, log: Any = print) -> list[dict[str, Any]]:
    """Train and evaluate every cell not finished yet, then write the report."""
    from .report import write_report

    if not ablation.resolved:
        validate(ablation)
    out = output_dir(ablation)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i, cell in enumerate(ablation.cells, 1):
        record_path = cell_record_path(out, cell)
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            if record.get("status") == "done":
                log(f"[{i}/{len(ablation.cells)}] {cell.name}: finished earlier, skipped")
                records.append(record)
                continue
        log(f"[{i}/{len(ablation.cells)}] {cell.name}")
        record = run_cell(ablation, cell, out, progress=progress)
        atomic_write_json(record_path, record)
        records.append(record)
    write_report(ablation, out, records)
    return records


def run_cell(ablation: Ablation, cell: Cell, out: Path, *, progress: bool) -> dict[str, Any]:
    from .images import labelled_grid, save_png
    from .workflows import evaluate_run, train_run

    resolved = ablation.resolved[cell.name]
    run = RunDir(out / cell.name)
    record: dict[str, Any] = {"name": cell.name, "changes": cell.changes, "seed": cell.seed}
    try:
        started = time.perf_counter()
        pipeline = train_run(resolved, run, resume=run.exists(), progress=progress)
        record["train_seconds"] = time.perf_counter() - started
        record["parameters"] = {
            role: sum(p.numel() for p in m.parameters()) for role, m in pipeline.components.modules()
        }
        prompts = ablation.spec.prompts or [pipeline.components.dataset[i].caption for i in range(4)]
        n = ablation.spec.images_per_prompt
        expanded = [p for p in prompts for _ in range(n)]
        t0 = time.perf_counter()
        images = pipeline.generate(expanded, seed=cell.seed)
        record["seconds_per_image"] = (time.perf_counter() - t0) / len(expanded)
        save_png(labelled_grid(images, expanded, cols=n * min(4, len(prompts))), run.path / "comparison.png")
        record["grid"] = str((run.path / "comparison.png").relative_to(out))
        if pipeline.components.evaluator is not None:
            record["evaluation"] = evaluate_run(pipeline)
        record["status"] = "done"
    except Exception as exc:  # a failed cell is reported, not fatal
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ModiffError):
            record["traceback"] = traceback.format_exc(limit=8)
    record["losses"] = [
        (m["step"], m["loss"]) for m in run.read_metrics() if m.get("stage") == "denoiser" and "loss" in m
    ]
    return record
