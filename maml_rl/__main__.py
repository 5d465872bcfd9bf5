"""``python -m maml_rl``: the single Hydra app (``mode=train`` or ``mode=evaluate``); see ``maml_rl.app``.

``--help`` is answered from the config files alone, and the command line's keys are checked
against the schema before Hydra composes, so that a typo gets one line that names it.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .help import CONF, help_text

# Hydra's flags that take the next word as their value (``--cfg job``, ``--info searchpath``)
VALUED = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
          "--info", "-i", "--experimental-rerun"}


def overrides_of(argv: list[str]) -> list[str]:
    """The overrides of a command line: its words that are neither flags nor a flag's value."""
    words, skip = [], False
    for word in argv:
        if skip and "=" not in word:
            skip = False
            continue
        skip = word in VALUED
        if not word.startswith("-"):
            words.append(word)
    return words


def main(cfg: DictConfig) -> float | None:
    from . import app

    hydra_cfg = HydraConfig.get()
    evaluates = any(str(c.get("_target_", "")).endswith("EvaluateSweep") for c in (hydra_cfg.callbacks or {}).values())
    return app.main(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task), evaluates)


def run() -> None:
    """Answer ``--help`` at once; otherwise check the keys, register the schema and hand over to Hydra."""
    # presets are an optional group now (`experiment=x`); the `+experiment=x` of earlier versions means the same
    sys.argv = [a[1:] if a.startswith("+experiment=") else a for a in sys.argv]
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(help_text())
        return
    from .config import ConfigError, check_overrides, register

    try:
        check_overrides(overrides_of(sys.argv[1:]))
    except ConfigError as err:
        print(f"maml_rl: invalid config: {err}", file=sys.stderr)
        sys.exit(2)
    register()
    hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")(main)()


if __name__ == "__main__":
    run()
