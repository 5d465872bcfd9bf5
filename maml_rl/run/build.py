"""Builders from the composed config: env, policy, adaptation, sampler, outer loop, tracker, and
checkpoint references. Training, evaluation and the scripts in ``experiments/`` all build here."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..algorithms import OuterLoop, build_algorithm
from ..config import default_suppliers, settings
from ..core.maml import MetaLearner
from ..core.sampler import Sampler
from ..envs import ENVS, make_env
from ..policies import Policy, build_policy
from ..tracking import TRACKERS, Tracker
from ..tracking.mlflow import download_checkpoint, is_run_id


def build_env(cfg: DictConfig, num_tasks: int, episodes_per_task: int, oracle: bool,
              generator: torch.Generator | None = None, normalize_actions: bool | None = None):
    """The env of ``cfg.env`` for ``num_tasks`` × ``episodes_per_task`` episodes (see ``envs.make_env``)."""
    return make_env(settings(cfg, "env"), num_tasks, episodes_per_task, oracle, cfg.threads, generator,
                    normalize_actions)


def task_conditions(cfg: DictConfig, tasks: torch.Tensor) -> list[str]:
    """The env family's bucket of every task (``TaskEnv.task_conditions``)."""
    return ENVS[cfg.env.name].cls.task_conditions(tasks)


def initial_policy(cfg: DictConfig, env) -> Policy:
    """The policy θ_0 of seed ``cfg.seed`` sized for ``env`` (the random baseline's policy)."""
    torch.manual_seed(cfg.seed)
    return build_policy(settings(cfg, "policy"), obs_dim=env.observation_spec["observation"].shape[-1],
                        act_dim=env.action_spec.shape[-1], normalize_observations=cfg.env.normalize_observations)


def build_learner(cfg: DictConfig, policy: Policy, num_steps: int | None = None,
                  lr: float | list[float] | None = None) -> MetaLearner:
    """The adaptation of ``cfg.inner``; ``num_steps`` and ``lr`` (one per step) override its own."""
    inner = cfg.inner
    return MetaLearner(policy, inner.lr if lr is None else lr, inner.num_steps if num_steps is None else num_steps,
                       inner.first_order, inner.estimator)


def build_sampler(cfg: DictConfig, env, policy: Policy, generator: torch.Generator) -> Sampler:
    """Episodes of ``cfg.env.horizon`` steps with advantages of ``cfg.gamma`` / ``cfg.gae_lambda``."""
    return Sampler(env, policy, cfg.env.horizon, cfg.gamma, cfg.gae_lambda, generator)


def build_outer_loop(cfg: DictConfig) -> OuterLoop:
    """The outer loop of ``cfg.algorithm``."""
    return build_algorithm(settings(cfg, "algorithm"))


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


def run_name(cfg: DictConfig) -> str:
    """A training run's name: ``<baseline>-<algorithm>-<env>-s<seed>``."""
    return f"{cfg.baseline.name}-{cfg.algorithm.name}-{cfg.env.name}-s{cfg.seed}"


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


def resolve_checkpoint(reference: str, tracking_uri: str) -> Path:
    """A checkpoint path, a run dir, or an MLflow run id (``<32 hex>`` or ``runs:/<id>``) → its checkpoint file.

    Raises:
        FileNotFoundError: if the path does not exist and is not a run id, or the run has no checkpoint.
    """
    path = Path(reference)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if path.is_file():
        return path
    run_id = is_run_id(reference)
    if not run_id:
        raise FileNotFoundError(f"checkpoint {reference}: no such file, and not an MLflow run id")
    return download_checkpoint(run_id, tracking_uri)
