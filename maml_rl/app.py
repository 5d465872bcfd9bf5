"""The app behind ``python -m maml_rl``: validate the config, then hand over to the job (``run.jobs``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from .config import ConfigError, validate
from .run import jobs


def main(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = ()) -> float | None:
    """Validate the composed config, then train (or resume) or evaluate into ``run_dir``.

    ``overrides`` are the command line's (to check what a resume may change and to name sweep
    jobs). Returns the run's objective (mean post-adaptation return of the last 20 iterations)
    for Hydra's sweepers, or None for an evaluation.

    Raises:
        SystemExit: code 2 with one line on stderr for a bad config value, nothing to resume or
            evaluate, or an unusable tracking store; no output dir is left behind.
    """
    try:
        validate(cfg)
    except ConfigError as err:
        jobs.refuse(run_dir, f"invalid config: {err}")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    try:
        if cfg.mode == "evaluate":
            jobs.run_evaluation(cfg, run_dir, Path.cwd())
            return None
        return jobs.train(cfg, run_dir, Path.cwd(), overrides)
    except jobs.Refused as err:
        jobs.refuse(run_dir, str(err))
