"""The Tracker protocol (where a run's metrics, params and artifacts go), a null tracker, the registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from ..registry import Registry, Settings


@dataclass
class TrackingConfig(Settings):
    """Settings of a tracking backend: ``uri`` (``null``: the backend's default store) and the
    ``experiment`` runs are grouped under."""

    name: str = "mlflow"
    uri: str | None = None
    experiment: str = "maml_rl"
    rules: ClassVar[dict] = {"experiment": (lambda v: bool(v.strip()), "a non-empty name")}


class TrackingUnavailable(ConnectionError):
    """The tracking store cannot be reached or is not one the backend can use; the message names
    the URI and the forms that work."""


@runtime_checkable
class Tracker(Protocol):
    """One tracked run of ``python -m maml_rl``, and what its backend does beyond one run.

    A backend's class is built as ``cls(config, run_dir=, launch_dir=, run_name=, tags=,
    params=, resume=)``: ``run_dir`` is the job's output dir, ``launch_dir`` where the command
    ran, ``params`` the flattened config (``{"inner.lr": "0.1"}``) and ``resume`` ``(uri,
    run_id)`` of a run to continue instead of starting one. ``name`` is the backend's registry
    name; ``run_id`` and ``uri`` are what a checkpoint records to find the run again (``None``
    when nothing is stored). Building it raises ``TrackingUnavailable`` for a store it cannot use.

    Three class methods serve the app and the sweep callbacks, so that nothing outside the
    backend's module knows it: ``checkpoint_of`` (a run reference such as an MLflow run id → the
    run's checkpoint file), ``start_sweep`` and ``finish_sweep`` (a sweep's own record, e.g. a
    parent run with every job's objective).
    """

    name: str
    run_id: str | None
    uri: str | None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...

    def where(self) -> str | None:
        """How a person opens the run (a command or a URL), or None."""

    @classmethod
    def checkpoint_of(cls, reference: str, config: TrackingConfig, launch_dir: Path) -> Path | None:
        """The checkpoint file of the tracked run ``reference`` (fetched if need be), or None if
        ``reference`` is not a run reference of this backend.

        Raises:
            FileNotFoundError: a run reference whose run or checkpoint cannot be fetched.
        """

    @classmethod
    def start_sweep(cls, config: TrackingConfig, sweep_dir: Path, launch_dir: Path, tags: dict[str, str],
                    params: dict[str, str]) -> None:
        """Before any job of a ``--multirun`` starts: the sweep's own record, which its jobs (local or
        on a cluster) find from their output dirs inside ``sweep_dir``.

        Raises:
            TrackingUnavailable: the store cannot be reached.
        """

    @classmethod
    def finish_sweep(cls, config: TrackingConfig, sweep_dir: Path, maximize: bool,
                     best_params: dict[str, str] | None) -> dict[str, str] | None:
        """After every job: summarise the sweep (each job's ``train/objective``, the best one, an
        Optuna sweep's ``best_params``); returns the best job's ``best_run_id`` / ``best_run_name`` /
        ``best_overrides``, or None."""


TRACKERS = Registry("tracking")


@dataclass
class NullConfig(TrackingConfig):
    """``tracking=none``: nothing is recorded beyond the run dir (checkpoints, logs)."""

    name: str = "none"


@TRACKERS.register("none", NullConfig)
class NullTracker:
    """A tracker that records nothing (``tracking=none``, tests, benchmarks)."""

    name = "none"
    run_id = None
    uri = None

    def __init__(self, config: TrackingConfig | None = None, **_: object):
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def where(self) -> None:
        return None

    @classmethod
    def checkpoint_of(cls, reference: str, config: TrackingConfig, launch_dir: Path) -> None:
        return None

    @classmethod
    def start_sweep(cls, config, sweep_dir, launch_dir, tags, params) -> None:
        pass

    @classmethod
    def finish_sweep(cls, config, sweep_dir, maximize, best_params) -> None:
        return None
