"""The run's trackers (``[track]``: TensorBoard, MLflow), fed from one place.

Training reports to trackers only through :class:`Tracking`: the resolved
settings as parameters when it starts, every record it appends to
``metrics.jsonl`` as scalars (:meth:`Tracking.record`), each sample grid and
denoising trajectory as an image, and the run's result files as artifacts
when it ends. ``metrics.jsonl`` stays the source of truth; a tracker is a
window on it, so it may fail without costing the run anything: a tracker
that raises is warned about once (:class:`TrackerWarning`, naming it and
what failed), closed and dropped, and training goes on.

Trackers see one series of steps for the whole run: a stage's step ``s`` is
logged at ``offset + s``, the offset being the steps of the run's stages
before it (:func:`stage_spans`). The plan depends on the components as the
settings build them, never on what a checkpoint or the stage cache restored,
so a resumed run logs at the steps the first attempt did. Each tracker's run
id is kept in the checkpoint (:meth:`Tracking.ids`, committed with the
training state), so a resumed run continues the same tracked run, told where
the checkpoint ends (``TrackedRun.resume_after``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .protocols import ParamValue, TrackedRun, Tracker, Trainable
from .runs import RunDir
from .settings import ResolvedSettings
from .training_plan import stages_to_train

#: The checkpoint state's key for the trackers' run ids (tracker name -> id).
STATE_KEY = "trackers"


class TrackerWarning(UserWarning):
    """A tracker failed and was dropped for the rest of the run (the run goes on)."""


def stage_spans(components: Any) -> dict[str, int]:
    """The steps each stage of the run's plan takes (:func:`stages_to_train`, which
    the components as built decide, never a checkpoint: a resumed run, or one the
    stage cache started, has the same plan), in order: the denoiser its ``[train]
    steps``, an encoder or text embedder trained by gradient descent
    (:class:`Trainable`) its ``[train.ROLE] steps``, one only fitted none."""
    train = components.settings.train
    spans = {}
    for stage in stages_to_train(components):
        if stage == "denoiser":
            spans[stage] = train.steps
        else:
            spans[stage] = getattr(train, stage).steps if isinstance(components.get(stage), Trainable) else 0
    return spans


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, ParamValue]:
    """Nested settings as ``table.key`` parameters; lists as JSON text, unset values left out."""
    out: dict[str, ParamValue] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        elif isinstance(value, (str, int, float, bool)):
            out[name] = value
    return out


class Tracking:
    """The trackers of one training process (none off the main process), each
    dropped at its first failure."""

    def __init__(self, trackers: Mapping[str, Tracker] | None = None, spans: Mapping[str, int] | None = None):
        self.trackers: dict[str, Tracker] = dict(trackers or {})
        self.offsets: dict[str, int] = {}
        at = 0
        for stage, span in (spans or {}).items():
            self.offsets[stage], at = at, at + span
        self.spans = dict(spans or {})
        self._ids: dict[str, str] = {}
        self._pictured: dict[str, int] = {}  # image name -> the last step it was logged at

    @classmethod
    def start(
        cls,
        resolved: ResolvedSettings,
        run_path: Path,
        spans: Mapping[str, int],
        *,
        resume_state: Mapping[str, Any] | None = None,
        resuming: bool = False,
    ) -> Tracking:
        """Build and start the trackers ``resolved`` names for the run at ``run_path``.

        ``resume_state`` is the state of the checkpoint a resumed run continues
        from (``None``: none yet); ``resuming`` says whether the run resumes,
        so that steps a killed first attempt logged before its first
        checkpoint are dropped too.
        """
        tracking = cls(spans=spans)
        if not resolved.trackers:
            return tracking
        state = resume_state or {}
        kept = state.get(STATE_KEY) or {}
        tracking._ids = {str(k): str(v) for k, v in kept.items()} if isinstance(kept, Mapping) else {}
        track = resolved.settings.track
        resume_after = tracking.committed_step(state) if resuming else None
        for name, component in resolved.trackers.items():
            run = TrackedRun(
                name=resolved.run.name,
                path=run_path,
                runs_dir=Path(resolved.run.runs_dir),  # the runs folder, also for an ablation's runs
                run_id=tracking._ids.get(name),
                resume_after=resume_after,
                group=track.group,
                tags=dict(track.tags),
            )
            try:
                tracker = component.registration.factory(component.params, run)
                tracking.trackers[name] = tracker
                tracking._ids[name] = str(tracker.start(run))
            except Exception as exc:  # a tracker never loses a run
                tracking._drop(name, "start", exc)
        tracking.params(flatten(resolved.to_dict()))
        return tracking

    # ---------------------------------------------------------------- steps

    def step(self, stage: str, step: int) -> int:
        """The run-wide step trackers see for ``stage``'s step ``step``."""
        return self.offsets.get(stage, 0) + step

    def committed_step(self, state: Mapping[str, Any]) -> int:
        """The last run-wide step a checkpoint's ``state`` holds (0 without one)."""
        stage = state.get("stage")
        if stage:
            return self.step(str(stage), int(state.get("step", 0)))
        done = list(state.get("stages_done") or [])
        return self.step(done[-1], self.spans.get(done[-1], 0)) if done else 0

    def ids(self) -> dict[str, str]:
        """Each tracker's run id, for the checkpoint (those of trackers dropped
        this time too, so that a later resume may continue their runs)."""
        return dict(self._ids)

    # ---------------------------------------------------------------- feeding

    def params(self, params: Mapping[str, ParamValue]) -> None:
        self._each("log_params", lambda t: t.log_params(params))

    def record(self, record: Mapping[str, Any]) -> None:
        """One ``metrics.jsonl`` record as scalars: an evaluation's numbers as
        ``eval/NAME``, a training record's as ``STAGE/NAME`` (and the step time,
        ``STAGE/step_seconds``, from its speed)."""
        if not self.trackers or "stage" not in record or "step" not in record:
            return
        stage, step = str(record["stage"]), self.step(str(record["stage"]), int(record["step"]))
        if record.get("kind") == "eval":
            values = {f"eval/{k}": float(v) for k, v in _numbers(record.get("eval") or {})}
        else:
            skip = {"stage", "step", "time", "kind"}
            values = {f"{stage}/{k}": float(v) for k, v in _numbers(record) if k not in skip}
            speed = record.get("steps_per_s")
            if isinstance(speed, (int, float)) and speed > 0:
                values[f"{stage}/step_seconds"] = 1.0 / float(speed)
        if values:
            self._each("log_scalars", lambda t: t.log_scalars(step, values))

    def images(self, stage: str, step: int, images: Mapping[str, Path]) -> None:
        """PNG files (``name -> path``) at ``stage``'s step ``step``, each name once
        per step (the final grid of a run whose last step also draws one is the same picture)."""
        at = self.step(stage, step)
        for name, path in images.items():
            if self._pictured.get(name, -1) >= at:
                continue
            self._pictured[name] = at
            self._each(f"log_image ({name!r})", lambda t, n=name, p=path: t.log_image(at, n, p))

    def artifacts(self, files: Iterable[Path]) -> None:
        present = [f for f in files if f.is_file()]
        if present:
            self._each("log_artifacts", lambda t: t.log_artifacts(present))

    def close(self) -> None:
        """Close every tracker still open (a failure to close warns too)."""
        for name, tracker in list(self.trackers.items()):
            del self.trackers[name]
            try:
                tracker.close()
            except Exception as exc:
                _warn(name, "close", exc)

    # ---------------------------------------------------------------- failures

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                call(tracker)
            except Exception as exc:  # a tracker never loses a run
                self._drop(name, what, exc)

    def _drop(self, name: str, what: str, exc: Exception) -> None:
        tracker = self.trackers.pop(name, None)
        _warn(name, what, exc)
        if tracker is not None:
            try:
                tracker.close()
            except Exception:  # already warned about this tracker once; it is gone either way
                pass


def _warn(name: str, what: str, exc: Exception) -> None:
    warnings.warn(
        f"tracker {name!r} failed in {what} ({type(exc).__name__}: {exc}); training goes on without it "
        "(metrics.jsonl keeps every number)",
        TrackerWarning,
        stacklevel=3,
    )


def _numbers(values: Mapping[str, Any]) -> Iterable[tuple[str, float]]:
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            yield str(k), v


def result_files(run: RunDir) -> list[Path]:
    """The run's result files trackers keep as artifacts: its settings, metrics,
    data report and final sample pictures (not its weights, which stay in the run)."""
    files = [run.settings, run.metrics, run.path / "data_report.json"]
    return files + sorted(run.samples.glob("final*.png"))
