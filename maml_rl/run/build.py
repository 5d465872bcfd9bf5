"""Builders from the composed config: task family, policy, inner loop, sampler, Trainer, tracker,
and checkpoint references. Training, evaluation and the scripts in ``experiments/`` all build here."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..algorithms.base import build_outer_loop
from ..config import default_suppliers, settings
from ..core.maml import InnerLoop
from ..core.sampler import Sampler
from ..envs.base import TaskFamily, build_family
from ..policies.base import Policy, build_policy
from ..tracking import TRACKERS, Tracker
from .sweeps import run_name
from .trainer import Trainer, TrainerSettings


def family_of(cfg: DictConfig) -> TaskFamily:
    """The task family of ``cfg.env``, built once (it reads its data, if any, here)."""
    return build_family(settings(cfg, "env"), cfg.threads)


def initial_policy(cfg: DictConfig, family: TaskFamily, oracle: bool = False) -> Policy:
    """The policy θ_0 of seed ``cfg.seed`` sized for ``family`` (the random baseline's policy)."""
    torch.manual_seed(cfg.seed)
    return build_policy(settings(cfg, "policy"), obs_dim=family.observation_size(oracle), act_dim=family.action_size,
                        normalize_observations=cfg.env.normalize_observations)


def build_inner_loop(cfg: DictConfig, policy: Policy, num_steps: int | None = None,
                     lr: float | list[float] | None = None) -> InnerLoop:
    """The adaptation of ``cfg.inner``; ``num_steps`` and ``lr`` (one per step) override its own."""
    inner = cfg.inner
    return InnerLoop(policy, inner.lr if lr is None else lr, inner.num_steps if num_steps is None else num_steps,
                     inner.first_order, inner.estimator)


def build_sampler(cfg: DictConfig, env, policy: Policy, generator: torch.Generator) -> Sampler:
    """Episodes of ``cfg.env.horizon`` steps with advantages of ``cfg.gamma`` / ``cfg.gae_lambda``."""
    return Sampler(env, policy, cfg.env.horizon, cfg.gamma, cfg.gae_lambda, generator)


def build_trainer(cfg: DictConfig, run_dir: Path, tracker: Tracker | None = None,
                  family: TaskFamily | None = None) -> Trainer:
    """The Trainer of a composed, validated config: the family's env for ``meta_batch_size`` ×
    ``episodes_per_task`` episodes (the oracle's observation for ``baseline=oracle``), θ_0 of
    ``seed``, the inner loop (no step for a baseline trained without one), the outer loop of
    ``cfg.algorithm``; checkpoints record the config."""
    generator = torch.Generator().manual_seed(cfg.seed)
    family = family or family_of(cfg)
    oracle = cfg.baseline.oracle
    env = family.make_env(cfg.meta_batch_size, cfg.episodes_per_task, oracle, generator)
    policy = initial_policy(cfg, family, oracle)
    outer_loop = build_outer_loop(settings(cfg, "algorithm"))
    inner_loop = build_inner_loop(cfg, policy, None if cfg.baseline.inner_loop else 0)
    sampler = build_sampler(cfg, env, policy, generator)
    record = {"config": OmegaConf.to_container(cfg, resolve=True), "env": cfg.env.name,
              "baseline": cfg.baseline.name, "oracle": oracle}
    loop = TrainerSettings(cfg.meta_batch_size, cfg.num_iterations, cfg.checkpoint_every, cfg.baseline.train,
                           f"{cfg.baseline.name}-{cfg.algorithm.name} on {cfg.env.name}, seed {cfg.seed}", record)
    return Trainer(family, policy, inner_loop, sampler, outer_loop, generator, run_dir, loop, tracker)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as dotted keys (``{"inner": {"lr": 0.1}}`` → ``{"inner.lr": 0.1}``)."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}.").items()}


EVALUATION_KEYS = ("eval.", "env.", "inner.", "policy.", "episodes_per_task", "seed", "threads", "gamma", "gae_lambda")


def tracked_params(cfg: DictConfig) -> dict[str, str]:
    """The config as a person reads it in the run's params: dotted keys, no empty values, no key that
    only supplies another's default (``env.meta_batch_size`` is logged as ``meta_batch_size``), and
    ``eval.*`` (with what evaluation uses: env, inner loop, policy, seed) only on evaluation runs."""
    repeated = default_suppliers()
    evaluation = cfg.mode == "evaluate"
    params = {}
    for key, value in flatten(OmegaConf.to_container(cfg, resolve=True)).items():
        if value in (None, "", [], {}) or key in repeated or key in ("mode", "resume"):
            continue
        if key.startswith("eval.") != evaluation and not (evaluation and key.startswith(EVALUATION_KEYS)):
            continue
        params[key] = str(value)
    return params


def git_commit() -> str:
    """The package's git commit, or ``unknown`` outside a checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start_tracker(cfg: DictConfig, run_dir: Path, launch_dir: Path, name: str | None = None,
                  resume: tuple[str, str] | None = None, overrides: str = "") -> Tracker:
    """A run of the ``cfg.tracking`` backend for one job: named ``run_name(cfg)`` unless ``name`` is given, tagged ``env``, ``algorithm``, ``baseline``, ``seed``, ``git_commit``,
    ``output_dir``, ``mode`` and ``overrides`` (the command line's), with ``tracked_params`` as params;
    or ``resume=(uri, run id)``.
    Evaluation runs go to the experiment ``<tracking.experiment>-evaluation``, so that the training
    runs' charts are not filled with evaluation curves."""
    tags = {"env": cfg.env.name, "algorithm": cfg.algorithm.name, "baseline": cfg.baseline.name,
            "seed": str(cfg.seed), "git_commit": git_commit(), "output_dir": str(run_dir), "mode": cfg.mode,
            "overrides": overrides}
    config = settings(cfg, "tracking")
    if cfg.mode == "evaluate":
        config = dataclasses.replace(config, experiment=f"{config.experiment}-evaluation")
    return TRACKERS[config.name].cls(config, run_dir=run_dir, launch_dir=launch_dir, run_name=name or run_name(cfg),
                                     tags=tags, params=tracked_params(cfg), resume=resume)


def resolve_checkpoint(reference: str, tracking: Any, launch_dir: Path) -> Path:
    """A checkpoint path, a run dir, or a run reference of the ``tracking`` backend (its settings;
    e.g. a run id, ``Tracker.checkpoint_of``) → its checkpoint file.

    Raises:
        FileNotFoundError: a run dir without a checkpoint, a path that does not exist and is not a
            run reference, or a run without a checkpoint.
    """
    path = Path(reference)
    if path.is_dir():
        if not (path / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"{reference} is a directory without a checkpoint.pt (a run stopped before "
                                    "its first checkpoint, or not a run dir)")
        return path / "checkpoint.pt"
    if path.is_file():
        return path
    found = TRACKERS[tracking.name].cls.checkpoint_of(reference, tracking, launch_dir)
    if found is None:
        raise FileNotFoundError(f"checkpoint {reference}: no such file or run dir, and not a run id of "
                                f"tracking={tracking.name}")
    return found
