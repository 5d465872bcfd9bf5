"""``python -m maml_rl``: the single Hydra app (``mode=train`` or ``mode=evaluate``); see ``maml_rl.app``."""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from . import app
from .config import CONF, register

register()


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    return app.main(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task))


if __name__ == "__main__":
    # presets are an optional group now (`experiment=x`); the `+experiment=x` of earlier versions means the same
    sys.argv = [a[1:] if a.startswith("+experiment=") else a for a in sys.argv]
    main()
