"""MLflow tracking (``tracking=mlflow``): runs, sweep parents and checkpoints fetched by run id.

Every call to MLflow in the package is here.
"""

from __future__ import annotations

import random
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from .base import TRACKERS, TrackingConfig

PARENT_FILE = "mlflow_parent_run_id"  # in a sweep dir: the id of the sweep's parent run
RUN_ID = re.compile(r"^(runs:/)?([0-9a-f]{32})/?$")
CHECKPOINT_ARTIFACT = "checkpoint/checkpoint.pt"


def resolve_uri(uri: str | None, launch_dir: Path) -> str:
    """``tracking.uri``, or the default store ``sqlite:///<launch dir>/mlflow.db`` (absolute)."""
    return uri if uri else f"sqlite:///{(Path(launch_dir) / 'mlflow.db').resolve()}"


def retry_locked(fn, *args, attempts: int = 10, **kwargs):
    """Call ``fn``, retrying with exponential backoff while SQLite says "database is locked".

    Concurrent sweep jobs share one SQLite store; a write that meets another job's lock is
    retried instead of being lost.
    """
    for attempt in range(attempts - 1):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # MLflow wraps SQLAlchemy's OperationalError in several types
            if "locked" not in str(err):
                raise
            time.sleep(min(0.05 * 2**attempt, 2.0) * (1 + random.random()))
    return fn(*args, **kwargs)


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment ``name`` in ``uri``, creating it (artifacts beside a SQLite store).

    For a SQLite store, a file lock serialises the first contact, in which MLflow creates the
    tables, and the experiment's creation: the jobs of a sweep start at the same moment.
    """
    db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    with FileLock(f"{db}.lock") if db else nullcontext():
        client = mlflow.MlflowClient(uri)
        experiment = retry_locked(client.get_experiment_by_name, name)
        if experiment is not None:
            return experiment.experiment_id
        location = (db.parent / "mlruns").as_uri() if db else None
        try:
            return retry_locked(client.create_experiment, name, artifact_location=location)
        except MlflowException:  # created meanwhile by a job on another tracking client
            return client.get_experiment_by_name(name).experiment_id


@dataclass
class MlflowConfig(TrackingConfig):
    """``tracking=mlflow`` (default): ``uri`` null is ``sqlite:///<launch dir>/mlflow.db``."""

    name: str = "mlflow"


@TRACKERS.register("mlflow", MlflowConfig)
class MlflowTracker:
    """An MLflow run for one job: params, tags, metrics per iteration, artifacts.

    A job whose output dir lies in a sweep dir holding ``mlflow_parent_run_id`` becomes that
    sweep's child run (``mlflow.parentRunId``). See ``Tracker`` for the arguments.
    """

    def __init__(self, config: TrackingConfig, *, run_dir: Path, launch_dir: Path, run_name: str,
                 tags: dict[str, str], params: dict[str, str], resume: tuple[str, str] | None = None):
        self.run_dir = Path(run_dir)
        if resume:  # (tracking uri, run id): continue that run; its params and tags are already there
            self.uri = resume[0]
            mlflow.set_tracking_uri(self.uri)
            self.run = retry_locked(mlflow.start_run, run_id=resume[1])
            return
        self.uri = resolve_uri(config.uri, launch_dir)
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(experiment_id=experiment_id(self.uri, config.experiment))
        parent = self.run_dir.parent / PARENT_FILE  # written by the sweep callback: this job is a child
        if parent.is_file():
            tags = {**tags, "mlflow.parentRunId": parent.read_text().strip()}
        self.run = retry_locked(mlflow.start_run, run_name=run_name, tags=tags)
        retry_locked(mlflow.log_params, {k: v[:MAX_PARAM_VAL_LENGTH] for k, v in params.items()})

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def set_tags(self, tags: dict[str, str]) -> None:
        retry_locked(mlflow.set_tags, tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        retry_locked(mlflow.log_metrics, metrics, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            retry_locked(mlflow.log_artifacts, str(path), artifact_path)
        elif path.is_file():
            retry_locked(mlflow.log_artifact, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Log the Hydra config dir and log file, then end the run."""
        self.log_artifact(self.run_dir / ".hydra", ".hydra")
        for log in self.run_dir.glob("*.log"):
            self.log_artifact(log)
        retry_locked(mlflow.end_run, status)


def start_sweep_run(uri: str, experiment: str, sweep_dir: Path, tags: dict[str, str], params: dict[str, str]) -> str:
    """Create a sweep's parent run before any job starts; its id goes to ``<sweep dir>/mlflow_parent_run_id``,
    where each job (local or on a cluster node) finds it. Returns the run id."""
    client = mlflow.MlflowClient(uri)
    run = retry_locked(client.create_run, experiment_id(uri, experiment),
                       run_name=f"sweep-{sweep_dir.parent.name}-{sweep_dir.name}", tags=tags)
    for key, value in params.items():
        retry_locked(client.log_param, run.info.run_id, key, value[:MAX_PARAM_VAL_LENGTH])
    (sweep_dir / PARENT_FILE).write_text(run.info.run_id)
    return run.info.run_id


def finish_sweep_run(uri: str, run_id: str) -> None:
    """Mark a sweep's parent run finished."""
    retry_locked(mlflow.MlflowClient(uri).set_terminated, run_id, "FINISHED")


def is_run_id(reference: str) -> str | None:
    """The run id in ``<32 hex>`` or ``runs:/<32 hex>``, else None."""
    match = RUN_ID.match(reference)
    return match.group(2) if match else None


def download_checkpoint(run_id: str, uri: str) -> Path:
    """The final checkpoint (``checkpoint/checkpoint.pt`` artifact) of MLflow run ``run_id``, downloaded.

    Raises:
        FileNotFoundError: if the run or its checkpoint cannot be fetched.
    """
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT,
                                                    tracking_uri=uri)
    except Exception as err:  # mlflow raises several types for a missing run or artifact
        raise FileNotFoundError(f"checkpoint of MLflow run {run_id}: cannot be fetched ({err})") from err
    return Path(local)
