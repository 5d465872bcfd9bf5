"""MLflow tracking (``tracking=mlflow``): runs, sweep parents and checkpoints fetched by run id.

Every call to MLflow in the package is here, and MLflow is imported only when one is made (a
command that tracks nothing, or only prints its help, never loads it).
"""

from __future__ import annotations

import csv
import random
import re
import time
import urllib.request
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from .base import TRACKERS, TrackingConfig, TrackingUnavailable

MAX_PARAM_VAL_LENGTH = 6000  # MLflow's limit on a param's value (mlflow.utils.validation)

PARENT_FILE = "mlflow_parent_run_id"  # in a sweep dir: the id of the sweep's parent run
STORE_FILE = "mlflow_tracking_uri"  # and the store it is in
TRAINING_VIEW = "workflowType=machine_learning"  # MLflow 3's UI opens on its GenAI pages without it


STORES = ("sqlite:///", "http://", "https://", "postgresql://", "mysql://", "mssql://", "databricks")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast for a store MLflow cannot use here, or a tracking server that does not answer
    (MLflow itself retries for minutes).

    Raises:
        TrackingUnavailable: ``"tracking server http://127.0.0.1:9 is not reachable (...)"``, or
            ``"tracking.uri=some/dir is not a store MLflow can use: ..."`` (a plain path or a
            ``file:`` store, which MLflow 3 no longer keeps up).
    """
    if not uri.startswith(STORES):
        raise TrackingUnavailable(f"tracking.uri={uri} is not a store MLflow can use: give sqlite:///<file>.db "
                                  "(a local store), http://<host>:<port> (a tracking server), or tracking=none")
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnavailable(f"tracking server {uri} is not reachable ({reason}); start it or pass another "
                                  "tracking.uri (or tracking=none)") from None

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
    import mlflow
    from mlflow.exceptions import MlflowException

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

    name = "mlflow"

    def __init__(self, config: TrackingConfig, *, run_dir: Path, launch_dir: Path, run_name: str,
                 tags: dict[str, str], params: dict[str, str], resume: tuple[str, str] | None = None):
        import mlflow

        self.run_dir = Path(run_dir)
        if resume:  # (tracking uri, run id): continue that run; its params and tags are already there
            self.uri = resume[0]
            check_reachable(self.uri)
            mlflow.set_tracking_uri(self.uri)
            self.run = retry_locked(mlflow.start_run, run_id=resume[1])
            return
        self.uri = resolve_uri(config.uri, launch_dir)
        check_reachable(self.uri)
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

    def where(self) -> str:
        """How a person opens this run."""
        page = f"#/experiments/{self.run.info.experiment_id}/runs/{self.run_id}?{TRAINING_VIEW}"
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/{page}"
        return f"mlflow ui --backend-store-uri {self.uri}   then http://127.0.0.1:5000/{page}"

    def set_tags(self, tags: dict[str, str]) -> None:
        import mlflow

        retry_locked(mlflow.set_tags, tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import mlflow

        retry_locked(mlflow.log_metrics, metrics, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

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
        import mlflow

        retry_locked(mlflow.end_run, status)

    @classmethod
    def checkpoint_of(cls, reference: str, config: TrackingConfig, launch_dir: Path) -> Path | None:
        """The checkpoint of MLflow run ``reference`` (``<32 hex>`` or ``runs:/<id>``) in ``config.uri``
        (or the launch dir's store), downloaded; None for anything else.

        Raises:
            FileNotFoundError: if the run or its checkpoint cannot be fetched.
        """
        run_id = is_run_id(reference)
        return download_checkpoint(run_id, resolve_uri(config.uri, launch_dir)) if run_id else None

    @classmethod
    def start_sweep(cls, config: TrackingConfig, sweep_dir: Path, launch_dir: Path, tags: dict[str, str],
                    params: dict[str, str]) -> None:
        """The sweep's parent run (see ``start_sweep_run``); every job's run becomes its child."""
        start_sweep_run(resolve_uri(config.uri, launch_dir), config.experiment, sweep_dir, tags, params)

    @classmethod
    def finish_sweep(cls, config: TrackingConfig, sweep_dir: Path, maximize: bool,
                     best_params: dict[str, str] | None) -> dict[str, str] | None:
        """The parent run's summary (see ``finish_sweep_run``); None if the sweep has no parent run."""
        parent = sweep_dir / PARENT_FILE
        if not parent.is_file():
            return None
        uri = (sweep_dir / STORE_FILE).read_text().strip()
        return finish_sweep_run(uri, parent.read_text().strip(), sweep_dir, maximize, best_params)


def start_sweep_run(uri: str, experiment: str, sweep_dir: Path, tags: dict[str, str], params: dict[str, str]) -> str:
    """Create a sweep's parent run before any job starts; its id goes to ``<sweep dir>/mlflow_parent_run_id``,
    where each job (local or on a cluster node) finds it. Returns the run id."""
    import mlflow

    check_reachable(uri)
    client = mlflow.MlflowClient(uri)
    run = retry_locked(client.create_run, experiment_id(uri, experiment),
                       run_name=f"sweep-{sweep_dir.parent.name}-{sweep_dir.name}", tags=tags)
    for key, value in params.items():
        retry_locked(client.log_param, run.info.run_id, key, value[:MAX_PARAM_VAL_LENGTH])
    (sweep_dir / PARENT_FILE).write_text(run.info.run_id)
    (sweep_dir / STORE_FILE).write_text(uri)
    return run.info.run_id


def finish_sweep_run(uri: str, run_id: str, sweep_dir: Path, maximize: bool = True,
                     best_params: dict[str, str] | None = None) -> dict[str, str] | None:
    """Summarise a sweep on its parent run, then mark it finished.

    Every child's objective (``train/objective``) is logged on the parent as ``sweep/objective``
    at the child's job number, and written with its name and overrides to
    ``sweep_summary.csv`` (an artifact); the best child (highest objective, or lowest with
    ``maximize`` false) becomes the metric ``sweep/best_objective`` and the tags ``best_run_id``,
    ``best_run_name`` and ``best_overrides``; ``best_params`` (an Optuna sweep's) become params
    ``best.<key>``. Returns the best child's tags, or None without children.
    """
    import mlflow

    client = mlflow.MlflowClient(uri)
    parent = client.get_run(run_id)
    children = retry_locked(client.search_runs, [parent.info.experiment_id],
                            filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=10000)
    rows = []
    for child in children:
        objective = child.data.metrics.get("train/objective")
        job = Path(child.data.tags.get("output_dir", "")).name
        rows.append((int(job) if job.isdigit() else len(rows), child, objective))
        if objective is not None:
            retry_locked(client.log_metric, run_id, "sweep/objective", objective, step=rows[-1][0])
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "run_name", "run_id", "objective", "overrides"])
        for j, c, o in sorted(rows, key=lambda r: r[0]):
            writer.writerow([j, c.info.run_name, c.info.run_id, o, c.data.tags.get("overrides", "")])
    retry_locked(client.log_artifact, run_id, str(sweep_dir / "sweep_summary.csv"))
    scored = [(o, c) for _, c, o in rows if o is not None]
    best = None
    if scored:
        objective, child = (max if maximize else min)(scored, key=lambda r: r[0])
        best = {"best_run_id": child.info.run_id, "best_run_name": child.info.run_name,
                "best_overrides": child.data.tags.get("overrides", "")}
        retry_locked(client.log_metric, run_id, "sweep/best_objective", objective)
        for key, value in best.items():
            retry_locked(client.set_tag, run_id, key, value)
    for key, value in (best_params or {}).items():
        retry_locked(client.log_param, run_id, f"best.{key}", str(value)[:MAX_PARAM_VAL_LENGTH])
    retry_locked(client.set_terminated, run_id, "FINISHED")
    return best


def is_run_id(reference: str) -> str | None:
    """The run id in ``<32 hex>`` or ``runs:/<32 hex>``, else None."""
    match = RUN_ID.match(reference)
    return match.group(2) if match else None


def download_checkpoint(run_id: str, uri: str) -> Path:
    """The final checkpoint (``checkpoint/checkpoint.pt`` artifact) of MLflow run ``run_id``, downloaded.

    Raises:
        FileNotFoundError: if the run or its checkpoint cannot be fetched.
    """
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT,
                                                    tracking_uri=uri)
    except Exception as err:  # mlflow raises several types for a missing run or artifact
        raise FileNotFoundError(f"checkpoint of MLflow run {run_id}: cannot be fetched ({err})") from err
    return Path(local)
