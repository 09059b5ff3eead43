"""One MLflow run per modiff run, written through MLflow's own client.

Every call writes at once (no buffer, no background thread): what MLflow holds
when a run is killed is a prefix of each series, so a resumed run can carry
on exactly after it. The core hands a resumed run the id :meth:`start`
returned, and logs again the steps after its checkpoint; MLflow cannot delete
a metric's points, so this tracker reads, per metric and per image, the last
step MLflow already holds and skips those repeats (a deterministic resume
computes the same numbers). Each series thus stays strictly increasing, with
no duplicate and no gap.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import modiff

from .settings import MlflowSettings

#: MLflow's limits: parameters and metrics per ``log_batch`` call, characters of a parameter's value.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_PARAM_VALUE_CHARS = 6000
#: Tag keeping the last step of each image series (MLflow's images are artifacts, with no history to read).
_IMAGE_STEP_TAG = "modiff.last_image_step."
#: Tag naming the modiff run folder a tracked run belongs to.
RUN_DIR_TAG = "modiff.run_dir"
#: Folder beside a SQLite store where its experiments keep their artifacts by default.
ARTIFACTS_FOLDER = "mlflow-artifacts"


def tracking_uri(settings: MlflowSettings, runs_dir: Path) -> str:
    """The setting, else ``MLFLOW_TRACKING_URI``, else a SQLite file in the runs folder."""
    uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(runs_dir / 'mlflow.db').resolve().as_posix()}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///") :].split("?", 1)[0])).resolve()


def safe_key(key: str) -> str:
    """A name MLflow accepts as a metric, parameter or tag key."""
    return re.sub(r"[^\w\-. :/]", "_", key)


@contextmanager
def _store_lock(database: Path | None) -> Iterator[None]:
    """One process at a time opens a SQLite store: the first creates its tables,
    and two ``ablate --jobs`` runs creating them at once would collide."""
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class MlflowTracker:
    """A modiff run as an MLflow run (:class:`modiff.Tracker`)."""

    def __init__(self, settings: MlflowSettings):
        self.settings = settings
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self._run_dir: Path | None = None
        self._tags: dict[str, str] = {}
        #: per metric key and per image name: the last step MLflow holds (resume skips repeats)
        self._last_metric_step: dict[str, int] = {}
        self._last_image_step: dict[str, int] = {}
        self._ended = False
        self._broken = False

    # ---------------------------------------------------------------- start

    def start(self, run: modiff.TrackedRun) -> str:
        uri = tracking_uri(self.settings, run.runs_dir)
        # MLflow reads its request limits from the environment at each request.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.settings.http_retries)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.settings.http_timeout)
        self._run_dir = run.path
        self._tags = {safe_key(k): str(v) for k, v in run.tags.items()}
        database = sqlite_file(uri)
        with self._failing(), _store_lock(database):
            client = MlflowClient(tracking_uri=uri)
            if run.run_id:
                self._reopen(client, run.run_id)
            else:
                experiment_id = self._experiment(client, run.group or self.settings.experiment, database)
                unfinished = self._unfinished(client, experiment_id, run) if run.resume_after is not None else None
                if unfinished is not None:
                    self._reopen(client, unfinished)
                else:
                    tags = {RUN_DIR_TAG: str(run.path.resolve()), **self._tags}
                    self.run_id = client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
            self.client = client
        assert self.run_id is not None
        return self.run_id

    def _experiment(self, client: MlflowClient, name: str, database: Path | None) -> str:
        """The experiment called ``name``, created (or restored from the bin) if need be."""
        found = client.get_experiment_by_name(name)
        if found is None:
            location = self.settings.artifact_location
            if location is None and database is not None:
                location = (database.parent / ARTIFACTS_FOLDER).as_uri()
            try:
                return client.create_experiment(name, artifact_location=location)
            except MlflowException:  # another process created it meanwhile
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id

    @staticmethod
    def _unfinished(client: MlflowClient, experiment_id: str, run: modiff.TrackedRun) -> str | None:
        """The MLflow run a first attempt killed before its first checkpoint left
        running for this run folder (no checkpoint kept its id), else ``None``."""
        folder = str(run.path.resolve())
        if "'" in folder:  # not expressible in MLflow's filter syntax: start a new MLflow run
            return None
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_DIR_TAG}` = '{folder}' and attributes.status = 'RUNNING'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def _reopen(self, client: MlflowClient, run_id: str) -> None:
        """Continue ``run_id``: mark it running again and read the last step of each series."""
        tracked = client.get_run(run_id)
        self.run_id = run_id
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        for key in tracked.data.metrics:
            steps = [m.step for m in client.get_metric_history(run_id, key)]
            if steps:
                self._last_metric_step[key] = max(steps)
        for tag, value in tracked.data.tags.items():
            if tag.startswith(_IMAGE_STEP_TAG) and value.lstrip("-").isdigit():
                self._last_image_step[tag[len(_IMAGE_STEP_TAG) :]] = int(value)
        if self._tags:
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in self._tags.items()])

    # ---------------------------------------------------------------- logging

    def log_params(self, params: Mapping[str, modiff.ParamValue]) -> None:
        """The settings, and the group's tags (variant, seed) as parameters too, so
        MLflow's compare view can line runs up by them. A resumed run logs only
        the parameters its MLflow run lacks: MLflow keeps a parameter's first value."""
        client, run_id = self._open()
        values = {safe_key(k): str(v)[:_PARAM_VALUE_CHARS] for k, v in params.items()} | self._tags
        with self._failing():
            held = client.get_run(run_id).data.params
            new = [Param(k, v) for k, v in values.items() if k not in held]
            for i in range(0, len(new), _PARAMS_PER_BATCH):
                client.log_batch(run_id, params=new[i : i + _PARAMS_PER_BATCH])

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        client, run_id = self._open()
        now = int(time.time() * 1000)
        metrics = []
        for name, value in values.items():
            key = safe_key(name)
            if step > self._last_metric_step.get(key, -1):
                metrics.append(Metric(key, float(value), now, step))
        if not metrics:
            return
        with self._failing():
            for i in range(0, len(metrics), _METRICS_PER_BATCH):
                client.log_batch(run_id, metrics=metrics[i : i + _METRICS_PER_BATCH])
        for metric in metrics:
            self._last_metric_step[metric.key] = step

    def log_image(self, step: int, name: str, image: Path) -> None:
        """The PNG as an MLflow image at ``step`` (shown with a step slider in MLflow's UI)."""
        from PIL import Image

        client, run_id = self._open()
        key = safe_key(name)
        if step <= self._last_image_step.get(key, -1):
            return
        with self._failing(), Image.open(image) as picture:
            client.log_image(run_id, picture.convert("RGB"), key=key, step=step)
            client.set_tag(run_id, _IMAGE_STEP_TAG + key, str(step))
        self._last_image_step[key] = step

    def log_artifacts(self, files: Sequence[Path]) -> None:
        """Each file at its place in the run folder (a file outside it at the top);
        logging them again on a later resume replaces them."""
        client, run_id = self._open()
        with self._failing():
            for file in files:
                client.log_artifact(run_id, str(file), artifact_path=self._artifact_folder(file))
        self._ended = True

    def _artifact_folder(self, file: Path) -> str | None:
        try:
            folder = file.resolve().parent.relative_to(self._run_dir.resolve()) if self._run_dir else None
        except ValueError:
            return None
        return folder.as_posix() if folder and folder.parts else None

    def close(self) -> None:
        """Mark the MLflow run finished (killed if it ended before its artifacts:
        a resume marks it running again); nothing more once a call has failed."""
        if self.client is None or self.run_id is None or self._broken:
            return
        status = RunStatus.FINISHED if self._ended else RunStatus.KILLED
        client, self.client = self.client, None
        client.set_terminated(self.run_id, RunStatus.to_string(status))

    # ---------------------------------------------------------------- failures

    def _open(self) -> tuple[MlflowClient, str]:
        if self.client is None or self.run_id is None:
            raise RuntimeError("the MLflow run is not open (start failed or the tracker was closed)")
        return self.client, self.run_id

    @contextmanager
    def _failing(self) -> Iterator[None]:
        """Remember a failure, so that ``close`` does not wait on a server that is down."""
        try:
            yield
        except BaseException:
            self._broken = True
            raise

