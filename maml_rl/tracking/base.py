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


@runtime_checkable
class Tracker(Protocol):
    """One tracked run of ``python -m maml_rl``.

    A backend's class is built as ``cls(config, run_dir=, launch_dir=, run_name=, tags=,
    params=, resume=)``: ``run_dir`` is the job's output dir, ``launch_dir`` where the command
    ran, ``params`` the flattened config (``{"inner.lr": "0.1"}``) and ``resume`` ``(uri,
    run_id)`` of a run to continue instead of starting one. ``run_id`` and ``uri`` are what a
    checkpoint records to find the run again (``None`` when nothing is stored).
    """

    run_id: str | None
    uri: str | None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...

    def where(self) -> str | None:
        """How a person opens the run (a command or a URL), or None."""


TRACKERS = Registry("tracking")


@dataclass
class NullConfig(TrackingConfig):
    """``tracking=none``: nothing is recorded beyond the run dir (checkpoints, logs)."""

    name: str = "none"


@TRACKERS.register("none", NullConfig)
class NullTracker:
    """A tracker that records nothing (``tracking=none``, tests, benchmarks)."""

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
