"""What a sweep's jobs share: the keys it varies (written once in the sweep dir) and the run
names built from them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

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


def run_name(cfg: DictConfig) -> str:
    """A training run's name: ``<baseline>-<algorithm>-<env>-s<seed>``."""
    return f"{cfg.baseline.name}-{cfg.algorithm.name}-{cfg.env.name}-s{cfg.seed}"


def sweep_run_name(cfg: DictConfig, run_dir: Path, overrides: Sequence[str]) -> str | None:
    """A sweep job's run name: the values of the keys the sweep varies, then ``run_name(cfg)``
    (``inner.lr=0.05 · maml-<outer loop>-<env>-s0``), so that what sets the jobs apart survives a
    tracker's UI cutting long names; None outside a sweep."""
    keys_file = run_dir.parent / SWEEP_KEYS
    if not keys_file.is_file():
        return None
    keys = set(json.loads(keys_file.read_text())) - NAMED
    values = [o for o in overrides if override_key(o) in keys]
    return " · ".join([" ".join(values), run_name(cfg)]) if values else run_name(cfg)
