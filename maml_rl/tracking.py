"""MLflow tracking: one run per job with the flattened config, tags, metrics and artifacts."""

from __future__ import annotations

import subprocess
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
            self.run = mlflow.start_run(run_id=resume[1])
            return
        self.uri = resolve_uri(cfg.tracking.uri, launch_dir)
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(experiment_id=self._experiment_id(cfg.tracking.experiment))
        run_name = run_name or f"{cfg.baseline.name}-{cfg.algorithm.name}-{cfg.env.name}-s{cfg.seed}"
        self.run = mlflow.start_run(run_name=run_name)
        mlflow.set_tags({"env": cfg.env.name, "algorithm": cfg.algorithm.name, "baseline": cfg.baseline.name,
                         "seed": str(cfg.seed), "git_commit": git_commit(), "output_dir": str(run_dir),
                         "mode": cfg.mode})
        mlflow.log_params(flatten(cfg))

    def _experiment_id(self, name: str) -> str:
        """The experiment's id, creating it (with its artifacts beside a SQLite store) if needed.

        For a SQLite store, a file lock serialises the first contact, in which MLflow creates
        the tables, and the experiment's creation: jobs of a sweep start at the same moment.
        """
        db = Path(self.uri.removeprefix("sqlite:///")) if self.uri.startswith("sqlite:///") else None
        with FileLock(f"{db}.lock") if db else nullcontext():
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            location = (db.parent / "mlruns").as_uri() if db else None
            try:
                return mlflow.create_experiment(name, artifact_location=location)
            except MlflowException:  # created meanwhile by a job on another tracking client
                return mlflow.get_experiment_by_name(name).experiment_id

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def set_tags(self, tags: dict[str, str]) -> None:
        mlflow.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path)
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Log the Hydra config dir and log file, then end the run."""
        self.log_artifact(self.run_dir / ".hydra", ".hydra")
        for log in self.run_dir.glob("*.log"):
            self.log_artifact(log)
        mlflow.end_run(status)
