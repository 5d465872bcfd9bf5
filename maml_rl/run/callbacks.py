"""Hydra callbacks: a tracked parent run per sweep (its jobs named after their overrides), and the
evaluation that follows a sweep."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SWEEP_KEYS = "sweep_keys.json"  # in a sweep dir: the keys the sweep varies
NAMED = {"baseline", "algorithm", "env", "seed"}  # already in a run's name


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a ``--multirun`` varies: comma or range overrides and the sweeper's ``params``."""
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    keys += [k for k in (OmegaConf.select(config, "hydra.sweeper.params") or {}) if k not in keys]
    return keys


def override_key(override: str) -> str:
    """The key of a command-line override: ``+a.b=1`` → ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def sweep_run_name(cfg: DictConfig, run_dir: Path, overrides: Sequence[str]) -> str | None:
    """A sweep job's run name: ``run_name(cfg)`` and the values of the keys the sweep varies
    (``maml-trpo-navigation-s0 inner.lr=0.05``); None outside a sweep."""
    from .build import run_name

    keys_file = run_dir.parent / SWEEP_KEYS
    if not keys_file.is_file():
        return None
    keys = set(json.loads(keys_file.read_text())) - NAMED
    return " ".join([run_name(cfg), *(o for o in overrides if override_key(o) in keys)])


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
        except Exception:  # Hydra turns a callback's exception into a warning; the sweep must fail instead
            log.exception("the evaluation of %s failed", sweep_dir)
            sys.exit(1)


class MlflowSweep(Callback):
    """One MLflow parent run per ``--multirun`` (with ``tracking=mlflow``); every job's run becomes its child.

    The parent (tag ``mode=sweep``, the sweep dir as a tag, the overrides and sweeper params as
    params) is created in the launching process before any job starts — which also creates the
    store once — and its id is written to ``<sweep dir>/mlflow_parent_run_id``, where each job
    (local or on a cluster node) finds it. When the sweep ends the parent gets its summary (every
    child's objective, the best child; an Optuna sweep's best params) and is marked finished.
    A failure of any of this fails the sweep.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_KEYS).write_text(json.dumps(swept_keys(config)))
        if config.tracking.name != "mlflow":
            return
        from ..tracking.mlflow import TrackingUnavailable, resolve_uri, start_sweep_run

        sweeper_params = OmegaConf.select(config, "hydra.sweeper.params") or {}
        params = {"overrides": " ".join(config.hydra.overrides.task),
                  **{f"sweep.{k}": str(v) for k, v in sweeper_params.items()}}
        try:
            self.uri = resolve_uri(config.tracking.uri, Path.cwd())
            self.run_id = start_sweep_run(self.uri, config.tracking.experiment, sweep_dir,
                                          {"mode": "sweep", "sweep_dir": str(sweep_dir), "env": config.env.name},
                                          params)
        except TrackingUnavailable as err:
            print(f"maml_rl: {err}", file=sys.stderr)
            sys.exit(1)
        except Exception:  # as above: fail the sweep, not only warn
            log.exception("creating the sweep's MLflow parent run in %s failed", config.tracking.uri or "./mlflow.db")
            sys.exit(1)
        log.info("MLflow parent run %s for sweep %s", self.run_id, sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not getattr(self, "run_id", None):
            return
        from ..tracking.mlflow import finish_sweep_run

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        results = sweep_dir / "optimization_results.yaml"  # written by the Optuna sweeper
        best_params = dict(OmegaConf.load(results).get("best_params", {})) if results.is_file() else None
        maximize = str(OmegaConf.select(config, "hydra.sweeper.direction", default="maximize")) != "minimize"
        try:
            best = finish_sweep_run(self.uri, self.run_id, sweep_dir, maximize, best_params)
        except Exception:  # as above
            log.exception("summarising the sweep on MLflow run %s failed", self.run_id)
            sys.exit(1)
        if best:
            log.info("best job of the sweep: %s (%s)", best["best_run_name"], best["best_run_id"])
