"""Hydra callbacks: a sweep's own tracked record (e.g. a parent run, its jobs named after
their overrides), and the evaluation that follows a sweep."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..config import settings
from ..tracking import TRACKERS, TrackingUnavailable
from .exits import Refused
from .sweeps import SWEEP_KEYS, swept_keys

log = logging.getLogger(__name__)


class EvaluateSweep(Callback):
    """After a ``--multirun`` has finished, evaluate every checkpoint of the sweep (+ random).

    Runs in the launching process once the launcher has returned, i.e. after every job —
    local or SLURM through submitit — has finished and written its checkpoint. Results go to
    ``<sweep dir>/evaluation/`` and to a tracked evaluation run.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        container = OmegaConf.to_container(config, resolve=False)
        container.pop("hydra", None)
        cfg = OmegaConf.create(container)
        cfg.mode = "evaluate"
        cfg.eval.sweep_dir = str(sweep_dir)
        log.info("evaluating the checkpoints of %s", sweep_dir)
        try:
            from .jobs import run_evaluation  # torch: only once the sweep has run

            run_evaluation(cfg, sweep_dir / "evaluation", Path.cwd())
        except Refused as err:
            print(f"maml_rl: {err}", file=sys.stderr)
            sys.exit(1)
        except Exception:  # Hydra turns a callback's exception into a warning; the sweep must fail instead
            log.exception("the evaluation of %s failed", sweep_dir)
            sys.exit(1)


class TrackedSweep(Callback):
    """A sweep's own record in the tracking backend (``Tracker.start_sweep`` / ``finish_sweep``;
    e.g. a parent run whose children are the jobs' runs), and the keys the sweep varies
    written to ``<sweep dir>/sweep_keys.json``, from which each job names its run.

    The record is made in the launching process before any job starts, and summarised (every
    job's objective, the best one; an Optuna sweep's best params) when the sweep ends. A failure
    of either fails the sweep.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_KEYS).write_text(json.dumps(swept_keys(config)))
        sweeper_params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        params = {"overrides": " ".join(config.hydra.overrides.task),
                  **{f"sweep.{k}": str(v) for k, v in sweeper_params.items()}}
        tracking = settings(config, "tracking")
        try:
            TRACKERS[tracking.name].cls.start_sweep(tracking, sweep_dir, Path.cwd(), {
                "mode": "sweep", "sweep_dir": str(sweep_dir), "env": config.env.name}, params)
        except TrackingUnavailable as err:
            print(f"maml_rl: {err}", file=sys.stderr)
            sys.exit(1)
        except Exception:  # as above: fail the sweep, not only warn
            log.exception("recording the sweep %s with tracking=%s failed", sweep_dir, tracking.name)
            sys.exit(1)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        results = sweep_dir / "optimization_results.yaml"  # written by the Optuna sweeper
        best_params = dict(OmegaConf.load(results).get("best_params", {})) if results.is_file() else None
        maximize = str(OmegaConf.select(config, "hydra.sweeper.direction", default="maximize")) != "minimize"
        tracking = settings(config, "tracking")
        try:
            best = TRACKERS[tracking.name].cls.finish_sweep(tracking, sweep_dir, maximize, best_params)
        except Exception:  # as above
            log.exception("summarising the sweep %s with tracking=%s failed", sweep_dir, tracking.name)
            sys.exit(1)
        if best:
            log.info("best job of the sweep: %s (%s)", best["best_run_name"], best["best_run_id"])
