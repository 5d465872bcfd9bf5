"""Hydra callbacks used by experiment presets."""

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
    ``<sweep dir>/evaluation/`` and to an MLflow evaluation run.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from .__main__ import run_evaluation

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
