"""The app behind ``python -m maml_rl``: validate the config, then hand over to the job (``run.jobs``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from .config import ConfigError, validate
from .run.exits import Refused, refuse, stopped
from .run.sweeps import override_key


def main(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = (), evaluates_after: bool = False) -> float | None:
    """Validate the composed config, then train (or resume) or evaluate into ``run_dir``.

    ``overrides`` are the command line's (to check what a resume may change, to name sweep jobs,
    and to refuse evaluation settings on a training run, unless ``evaluates_after``: a sweep that
    evaluates its checkpoints when it ends). Returns the run's objective (mean post-adaptation return of the last 20 iterations)
    for Hydra's sweepers, or None for an evaluation.

    Raises:
        SystemExit: code 2 with one line on stderr for a bad config value, nothing to resume or
            evaluate, or an unusable tracking store (no output dir is left behind); 130 / 143
            after Ctrl-C / SIGTERM (the last finished iteration checkpointed, the run KILLED).
    """
    try:
        validate(cfg)
    except ConfigError as err:
        refuse(run_dir, f"invalid config: {err}")
    ignored = [o for o in overrides if override_key(o).startswith("eval.")]
    if cfg.mode == "train" and ignored and not evaluates_after:
        refuse(run_dir, f"invalid config: {ignored[0]} is an evaluation setting, but mode=train would ignore it: "
                        "add mode=evaluate (with eval.checkpoints or eval.sweep_dir), or drop it")
    from .run import jobs  # torch and the plug-ins: only once the config is known to be good

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    try:
        if cfg.mode == "evaluate":
            jobs.run_evaluation(cfg, run_dir, Path.cwd())
            return None
        return jobs.train(cfg, run_dir, Path.cwd(), overrides)
    except Refused as err:
        refuse(run_dir, str(err))
    except jobs.Stopped as err:
        stopped(err, Path(err.checkpoint).parent)
    except KeyboardInterrupt:
        print("maml_rl: interrupted at once: the iteration in flight is lost, the last checkpoint written stands",
              file=sys.stderr)
        sys.exit(130)
