"""What the commands do, as functions: train a run, write samples, evaluate.

The CLI is a thin layer over these, and so is anything else (an ablation
grid, a notebook) that wants the same behaviour.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import environment
from . import progress as shown_progress
from .assembly import build, build_component
from .checkpoint import Checkpoint
from .distributed import World
from .errors import ModiffError, RunError
from .files import atomic_write_json, atomic_write_text, refused_writes_explained
from .grids import write_trajectory
from .pipeline import Pipeline
from .plugins import registry as default_registry
from .runs import RunDir
from .settings import ResolvedComponent, ResolvedSettings, load
from .stats import evaluator_error
from .tracking import Tracking, result_files, stage_spans
from .training import Trainer


def run_dir_for(resolved: ResolvedSettings) -> RunDir:
    """Where a run's settings say it lives: ``<runs_dir>/<name>``."""
    return RunDir(Path(resolved.run.runs_dir) / resolved.run.name)


def prepare_run(resolved: ResolvedSettings, run: RunDir, *, resume: bool, overwrite: bool) -> ResolvedSettings:
    """Create ``run`` for ``resolved``, or check it is the same run when resuming
    (the caller holds the run's lock).

    A run directory is never silently reused: training into an existing run
    needs ``--resume`` (same settings) or ``--overwrite``, which removes that
    run folder's contents and nothing else.
    """
    run.refuse_foreign()
    started = run.is_run()
    if resume and not started:
        raise RunError(
            f"--resume: {run.path} is not a run that was started (no settings.toml); "
            f"start it without --resume"
        )
    if started and overwrite:
        _empty_run_folder(run)
    elif started and not resume:
        raise RunError(
            f"run directory {run.path} already exists; continue it with `modiff train {run.path} --resume`, "
            "start again with --overwrite, or choose another [run] name"
        )
    elif started:
        saved = load([run.settings])
        differ = _differences(saved.to_dict(), resolved.to_dict())
        if differ:
            raise RunError(
                f"--resume: the settings differ from the ones {run.path} was started with "
                f"({', '.join(differ[:6])}); resume with the run's own settings: `modiff train {run.path} --resume`"
            )
        return saved
    with refused_writes_explained(run.marker):
        run.path.mkdir(parents=True, exist_ok=True)
        run.marker.write_text("a modiff run: `modiff train` may resume or overwrite this folder\n")
        for stale in run.path.glob(f".{run.settings.name}.*.tmp"):  # a creation killed mid-write
            stale.unlink()
    atomic_write_text(run.settings, resolved.to_toml())
    return resolved


def _empty_run_folder(run: RunDir) -> None:
    """Everything in the run folder but its lock (which this process holds):
    only in a folder that is a run by its own markers, and never in the
    current folder, the home folder or a folder above either."""
    if not run.is_run():
        raise RunError(f"--overwrite: {run.path} is not a modiff run; nothing was deleted")
    here, cwd = run.path.resolve(), Path.cwd().resolve()
    if here in {cwd, *cwd.parents, Path.home().resolve()}:
        raise RunError(
            f"--overwrite: {run.path} is the folder you are in, one above it, or your home folder; nothing was "
            "deleted: run the command from outside the run folder"
        )
    for entry in run.path.iterdir():
        if entry.name == run.lock_file.name:
            continue
        with refused_writes_explained(entry):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(_differences(va, vb, f"{prefix}{key}."))
        elif va != vb and not (prefix == "run." and key in {"device", "runs_dir", "name"}):
            out.append(f"{prefix}{key}")
    return out


def check_processes(resolved: ResolvedSettings, processes: int) -> None:
    """A :class:`ModiffError` unless ``processes`` can share the settings' batch:
    checked once, before any process starts (``--nproc``), and by every process."""
    if resolved.train.batch_size % processes:
        raise ModiffError(
            f"[train] batch_size = {resolved.train.batch_size} is not divisible by the {processes} processes; "
            "the global batch is split evenly across them: choose a process count that divides it"
        )


def train_run(
    resolved: ResolvedSettings,
    run: RunDir,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    world: World | None = None,
    on_stage_done: Callable[[str, Checkpoint], None] | None = None,
) -> Pipeline:
    """Train every stage of ``run`` (resuming where it stopped) and return the pipeline.

    ``on_stage_done(stage, checkpoint)`` is called as each stage commits (a
    :class:`~modiff.stage_cache.StageCache` keeps it for other runs).

    One process writes a run at a time (rank 0 holds the run's lock for the
    whole training); every other rank waits for it to prepare the folder.
    """
    world = world or World.from_env()
    check_processes(resolved, world.size)
    if world.is_main:
        run.refuse_foreign()  # before the lock: not even a .lock goes into a folder of someone else's files
    lock = run.lock() if world.is_main else contextlib.nullcontext()
    # Any write under the run that a library refused (disk full, read-only, no permission) and that no
    # narrower guard named ends here as the same one clear error.
    with refused_writes_explained(run.path), lock:
        if world.is_main:
            resolved = prepare_run(resolved, run, resume=resume, overwrite=overwrite)
        world.barrier()
        if not world.is_main:
            resolved = load([run.settings])
        device = None
        if world.size > 1 and torch.cuda.is_available():
            device = torch.device("cuda", world.local_rank)
        if resolved.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(resolved.run.seed)
        components = build(resolved, device=device)
        if world.is_main:  # loading the run reads these instead of building its dataset
            atomic_write_json(run.data_facts, components.context.data_facts.to_json())
            environment.record(run)  # what decides its bits beyond the settings
        pipeline = Pipeline(components, run)
        prompts = sample_prompts(pipeline)
        resume_from = run.latest() if resume else None
        tracking = Tracking()  # the trackers of [track], on the main process only
        if world.is_main:
            state = resume_from.state if resume_from is not None else None
            tracking = Tracking.start(resolved, run.path, stage_spans(components), resume_state=state, resuming=resume)

        def on_sample(tag: str, step: int) -> dict[str, Path]:
            with shown_progress.quiet():  # between training steps: the training bar is the one to watch
                return _sample(tag)

        def _sample(tag: str) -> dict[str, Path]:
            images = {}
            grid = components.task.write_samples(pipeline, prompts, run.samples / f"{tag}.png")
            if grid is not None:
                images["samples"] = grid
            if tracking.trackers and components.task.generates_from_prompts:  # drawn for trackers alone
                images["trajectory"] = write_trajectory(pipeline, prompts[:4], run.samples / tag)[0]
            return images

        def on_evaluate() -> dict[str, Any]:
            with shown_progress.quiet():
                return evaluate_run(pipeline)

        try:
            Trainer(
                components,
                run,
                world=world,
                progress=progress,
                resume_from=resume_from,
                on_sample=on_sample,
                on_evaluate=on_evaluate if components.evaluator is not None else None,
                on_stage_done=on_stage_done,
                tracking=tracking,
            ).train()
            tracking.artifacts(result_files(run))
        finally:
            tracking.close()
    return pipeline


def sample_prompts(pipeline: Pipeline, n: int = 8) -> list[str]:
    """The ``[sample] prompts``, else the captions of the first dataset items."""
    prompts = list(pipeline.components.settings.sample.prompts)
    ds = pipeline.components.dataset
    if not prompts and ds is not None:
        prompts = [ds[i].caption for i in range(min(n, len(ds)))]
    return prompts or [""]


def evaluate_run(
    pipeline: Pipeline,
    *,
    evaluator: str | None = None,
    prompts: Sequence[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the run's evaluator (or ``evaluator`` by name) and time it.

    Evaluators read the run's held-out data, so a run with a ``[data]`` table
    is evaluated with its dataset built (``Pipeline.load(run, with_data=True)``).
    """
    c = pipeline.components
    if evaluator is None and c.evaluator is None:
        names = ", ".join(default_registry().names("evaluator")) or "none installed"
        raise ModiffError(f"the run has no [evaluator]; choose one with --evaluator ({names})")
    if c.dataset is None and "data" in c.settings.components:
        raise ModiffError(
            "evaluating reads the run's dataset, which this pipeline was loaded without; "
            "load it with Pipeline.load(run, with_data=True)"
        )
    ev = c.evaluator
    if evaluator is not None:
        reg = default_registry().lookup("evaluator", evaluator)
        ev = build_component(ResolvedComponent("evaluator", reg, reg.validate(settings or {})), c.context)
    t0 = time.perf_counter()
    with shown_progress.labelled("evaluating"):  # the evaluator's sampling bar says what it is for
        result = dict(ev.evaluate(pipeline, prompts=list(prompts) if prompts else None))  # type: ignore[union-attr]
    result.setdefault("seconds", time.perf_counter() - t0)
    return result


def save_evaluation(run: RunDir, result: dict[str, Any], path: Path | None = None) -> Path:
    path = path or run.path / "evaluation.json"
    atomic_write_json(path, result)
    return path


def format_table(result: dict[str, Any]) -> str:
    """The flat numbers of an evaluation as an aligned two-column table."""
    rows = [(k, v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    width = max((len(k) for k, _ in rows), default=0)
    table = "\n".join(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in rows)
    return table + _error_note(result)


def _error_note(result: dict[str, Any]) -> str:
    """What the evaluator states about its own error, as lines under the table."""
    stated = result.get("evaluator_error")
    if not isinstance(stated, dict):
        return ""
    error = evaluator_error(result)
    if not error:
        return "\nevaluator error: not measured for this reader and image size (read the accuracies with care)"
    shown = ", ".join(f"{k} {100 * v:.1f} %" for k, v in error.items())
    where = f" on {stated['measured_on']}" if stated.get("measured_on") else ""
    return f"\nevaluator error (share of verdicts it gets wrong, measured{where}): {shown}"


def read_prompts(path: Path) -> list[str]:
    """Prompts from a text file (one per line) or a JSON list."""
    if not path.is_file():
        raise ModiffError(f"prompts file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModiffError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise ModiffError(f"{path} must hold a JSON list of strings")
        return data
    return [line.strip() for line in text.splitlines() if line.strip()]
