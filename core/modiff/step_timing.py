"""A load-free time axis: every cell's training step timed interleaved in one process.

Runs of a grid share a machine with each other and with whatever else runs
there, so their own training seconds say as much about the load as about the
cells. Timing each cell's steps in turn, in one process, several rounds, and
keeping the median puts every cell under the same load at the same moments:
the *ratios* of their step costs hold even on a busy machine. Read against the
reference cell's step time they give each run a load-free time axis
(:func:`relative_costs`; the report's third learning-curve panel).

The steps timed are the trainer's own (:class:`modiff.training.runner.StageRun`
on each stage of :mod:`modiff.training.stages`), with the cell's optimiser,
learning rate, EMA, clipping, condition dropout and caches, so the timing
cannot drift from what training does. A stage fitted rather than stepped (a
vocabulary) is timed once, as a fixed cost.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .assembly import build
from .protocols import Fittable, Trainable
from .runs import RunDir
from .settings import ResolvedSettings
from .training import Trainer
from .training.runner import StageRun
from .training.stages import component_stage

#: The stages in training order (:func:`modiff.training_plan.stages_to_train`).
STAGES = ("encoder", "text_embedder", "denoiser")


class CellSteps:
    """One cell's components and trainer, each stage set up when its turn comes.

    Stages are set up in training order, every cell's encoder before any
    cell's denoiser: building a denoiser stage freezes the encoder and caches
    what the frozen components compute, as training does after the stages
    before it. ``folder`` is a scratch run directory nothing is committed to.
    """

    def __init__(self, resolved: ResolvedSettings, folder: Path):
        torch.manual_seed(resolved.run.seed)
        self.resolved = resolved
        self.components = build(resolved)
        self.trainer = Trainer(self.components, RunDir(folder), progress=False)
        self.fixed_seconds = 0.0
        self.denoiser_params = sum(p.numel() for p in self.components.denoiser.parameters())
        #: per stage set up: the trainer's step (one update at a given step index) and the steps in a run
        self.steps: dict[str, tuple[Callable[[int], Any], int]] = {}

    def set_up(self, stage: str) -> Callable[[int], Any] | None:
        """The trainer's step of ``stage``, or ``None`` when the cell does not step in it."""
        trainer, c = self.trainer, self.components
        if stage not in trainer.plan:
            return None
        if stage == "denoiser":
            loop = StageRun(trainer.denoiser_stage(), c, trainer.run_progress, trainer.reporter)
            self.steps[stage] = (loop.update, self.resolved.train.steps)
            return loop.update
        component, settings = c.get(stage), getattr(self.resolved.train, stage)
        if isinstance(component, Fittable):
            # fitted twice, the second timed: the first call pays for imports and caches a run pays once per
            # process, and which cell came first would decide who is charged for them
            component.fit(c.dataset.captions())  # type: ignore[union-attr]
            t0 = time.perf_counter()
            component.fit(c.dataset.captions())  # type: ignore[union-attr]
            self.fixed_seconds += time.perf_counter() - t0
        if not (isinstance(component, Trainable) and settings.steps):
            return None
        loop = StageRun(component_stage(stage, component, settings, trainer.world), c, trainer.run_progress,
                        trainer.reporter)
        self.steps[stage] = (loop.update, settings.steps)
        return loop.update


def measure(cells: Mapping[str, ResolvedSettings], *, rounds: int, steps: int) -> dict[str, Any]:
    """Seconds per step of every stage of every cell, interleaved, on one thread.

    Stage by stage in training order: every cell's step of that stage is set
    up and warmed up (two steps: first calls allocate and pick kernels), then
    each of ``rounds`` rounds times ``steps`` steps of each cell in turn. A
    cell that fails to build or step is named under ``errors`` and the others
    measured.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a job of --jobs on a share of the cores; the ratios are what count
    built: dict[str, CellSteps] = {}
    errors: dict[str, str] = {}
    times: dict[str, dict[str, list[float]]] = {}

    def guarded(name: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - one cell that does not build or step is reported, not fatal
            errors[name] = f"{type(exc).__name__}: {exc}"
            built.pop(name, None)
            return None

    try:
        with tempfile.TemporaryDirectory(prefix="modiff-timing-") as scratch:
            for name, resolved in cells.items():
                cell = guarded(name, lambda r=resolved, n=name: CellSteps(r, Path(scratch) / n))
                if cell is not None:
                    built[name] = cell
            for stage in STAGES:
                takes = {}
                for name, cell in list(built.items()):
                    take = guarded(name, lambda c=cell, s=stage: c.set_up(s))
                    if take is not None and guarded(name, lambda t=take: (t(0), t(1))) is not None:
                        takes[name] = take
                for _ in range(rounds):
                    for name, take in takes.items():
                        t0 = time.perf_counter()
                        for k in range(steps):
                            take(2 + k)
                        times.setdefault(name, {}).setdefault(stage, []).append((time.perf_counter() - t0) / steps)
    finally:
        torch.set_num_threads(threads)
    return {
        "rounds": rounds,
        "steps_per_round": steps,
        "threads": 1,
        "cells": {
            name: {
                "seconds_per_step": {s: statistics.median(v) for s, v in times.get(name, {}).items()},
                "steps": {s: n for s, (_, n) in cell.steps.items()},
                "fixed_seconds": cell.fixed_seconds,
                "denoiser_params": cell.denoiser_params,
            }
            for name, cell in built.items()
        },
        "errors": errors,
    }


def relative_costs(timing: Mapping[str, Any], reference: str) -> dict[str, Any]:
    """Per cell, its denoiser step's cost relative to the reference cell's, and its
    stages before the denoiser in reference denoiser steps; ``unit_seconds`` is
    the reference's measured step. Empty when the reference was not measured."""
    cells = timing.get("cells") or {}
    if reference not in cells or "denoiser" not in cells[reference]["seconds_per_step"]:
        return {}
    unit = cells[reference]["seconds_per_step"]["denoiser"]
    out: dict[str, Any] = {"reference": reference, "unit_seconds": unit, "cells": {}}
    for name, cell in cells.items():
        sps, steps = cell["seconds_per_step"], cell["steps"]
        if "denoiser" not in sps:
            continue
        before = sum(sps[s] * steps[s] for s in STAGES[:-1] if s in sps) + cell["fixed_seconds"]
        out["cells"][name] = {
            "denoiser_relative": sps["denoiser"] / unit,
            "fixed_reference_steps": before / unit,
            "denoiser_params": cell["denoiser_params"],
        }
    return out
