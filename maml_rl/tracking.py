"""MLflow tracking: one run per job with the flattened config, tags, metrics and artifacts."""

from __future__ import annotations

import random
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
from omegaconf import DictConfig, OmegaConf


def resolve_uri(uri: str | None, launch_dir: Path) -> str:
    """``tracking.uri``, or the default store ``sqlite:///<launch dir>/mlflow.db`` (absolute)."""
    return uri if uri else f"sqlite:///{(launch_dir / 'mlflow.db').resolve()}"


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The config as dotted keys (``inner.lr``), values cut to MLflow's length limit."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = str(node)[:MAX_PARAM_VAL_LENGTH]

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


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
        experiment = retry_locked(mlflow.get_experiment_by_name, name)
        if experiment is not None:
            return experiment.experiment_id
        location = (db.parent / "mlruns").as_uri() if db else None
        try:
            return retry_locked(mlflow.create_experiment, name, artifact_location=location)
        except MlflowException:  # created meanwhile by a job on another tracking client
            return mlflow.get_experiment_by_name(name).experiment_id


PARENT_FILE = "mlflow_parent_run_id"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Tracker:
    """An MLflow run for one job of ``python -m maml_rl``.

    Args:
        cfg: the composed config (logged as params).
        run_dir: the job's Hydra output dir (tag ``output_dir``; its ``.hydra/`` is logged).
        launch_dir: where the command was launched (home of the default SQLite store).
        run_name: the MLflow run name (default ``<baseline>-<algorithm>-<env>-s<seed>``).
        resume: ``(tracking uri, run id)`` of a run to continue instead of starting one.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, launch_dir: Path, run_name: str | None = None,
                 resume: tuple[str, str] | None = None):
        self.run_dir = run_dir
        if resume:  # (tracking uri, run id): continue that run; its params and tags are already there
            self.uri = resume[0]
            mlflow.set_tracking_uri(self.uri)
            self.run = retry_locked(mlflow.start_run, run_id=resume[1])
            return
        self.uri = resolve_uri(cfg.tracking.uri, launch_dir)
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(experiment_id=experiment_id(self.uri, cfg.tracking.experiment))
        run_name = run_name or f"{cfg.baseline.name}-{cfg.algorithm.name}-{cfg.env.name}-s{cfg.seed}"
        tags = {"env": cfg.env.name, "algorithm": cfg.algorithm.name, "baseline": cfg.baseline.name,
                "seed": str(cfg.seed), "git_commit": git_commit(), "output_dir": str(run_dir), "mode": cfg.mode}
        parent = run_dir.parent / PARENT_FILE  # written by the sweep callback: this job is a child
        if parent.is_file():
            tags["mlflow.parentRunId"] = parent.read_text().strip()
        self.run = retry_locked(mlflow.start_run, run_name=run_name, tags=tags)
        retry_locked(mlflow.log_params, flatten(cfg))

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
