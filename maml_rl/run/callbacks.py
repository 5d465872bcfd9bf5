"""Hydra callbacks: a tracked parent run per sweep, and the evaluation that follows a sweep."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class EvaluateSweep(Callback):
    """After a ``--multirun`` has finished, evaluate every checkpoint of the sweep (+ random).

    Runs in the launching process once the launcher has returned, i.e. after every job —
    local or SLURM through submitit — has finished and written its checkpoint. Results go to
    ``<sweep dir>/evaluation/`` and to a tracked evaluation run.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from ..app import run_evaluation

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        container = OmegaConf.to_container(config, resolve=False)
        container.pop("hydra", None)
        cfg = OmegaConf.create(container)
        cfg.mode = "evaluate"
        cfg.eval.sweep_dir = str(sweep_dir)
        log.info("evaluating the checkpoints of %s", sweep_dir)
        try:
            run_evaluation(cfg, sweep_dir / "evaluation", Path.cwd())
        except Exception:  # Hydra turns callback exceptions into warnings; the sweep must fail instead
            log.exception("the evaluation of %s failed", sweep_dir)
            sys.exit(1)


class MlflowSweep(Callback):
    """One MLflow parent run per ``--multirun`` (with ``tracking=mlflow``); every job's run becomes its child.

    The parent (tag ``mode=sweep``, the sweep dir as a tag, the overrides and sweeper params as
    params) is created in the launching process before any job starts — which also creates the
    store once — and its id is written to ``<sweep dir>/mlflow_parent_run_id``, where each job
    (local or on a cluster node) finds it. The parent is marked finished when the sweep ends.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if config.tracking.name != "mlflow":
            return
        from ..tracking.mlflow import resolve_uri, start_sweep_run

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        sweeper_params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        params = {"overrides": " ".join(config.hydra.overrides.task),
                  **{f"sweep.{k}": str(v) for k, v in sweeper_params.items()}}
        self.uri = resolve_uri(config.tracking.uri, Path.cwd())
        self.run_id = start_sweep_run(self.uri, config.tracking.experiment, sweep_dir,
                                      {"mode": "sweep", "sweep_dir": str(sweep_dir), "env": config.env.name}, params)
        log.info("MLflow parent run %s for sweep %s", self.run_id, sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if getattr(self, "run_id", None):
            from ..tracking.mlflow import finish_sweep_run

            finish_sweep_run(self.uri, self.run_id)
