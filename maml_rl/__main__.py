"""``python -m maml_rl``: the single Hydra app."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .config import ConfigError, register, validate

log = logging.getLogger("maml_rl")
register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Validate the composed config, then train; returns the final post-adaptation return."""
    try:
        validate(cfg)
    except ConfigError as err:
        print(f"maml_rl: invalid config: {err}", file=sys.stderr)
        sys.exit(2)
    import torch  # imported after validation so that bad input fails fast

    from .tracking import Tracker
    from .trainer import Trainer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    tracker = Tracker(cfg, run_dir, launch_dir=Path.cwd())
    log.info("MLflow run %s in %s; outputs in %s", tracker.run_id, tracker.uri, run_dir)
    status = "FAILED"
    try:
        objective = Trainer(cfg, run_dir, tracker).meta_train()
        status = "FINISHED"
    finally:
        tracker.finish(status)
    log.info("final post-adaptation return (mean of the last 20 iterations): %.3f", objective)
    return objective


if __name__ == "__main__":
    main()
