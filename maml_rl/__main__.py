"""``python -m maml_rl``: the single Hydra app (``mode=train`` or ``mode=evaluate``); see ``maml_rl.app``."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from . import app
from .config import register

register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return app.main(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
