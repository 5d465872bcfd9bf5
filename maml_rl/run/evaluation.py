"""``mode=evaluate``: adaptation curves of MAML and its baselines on fresh tasks.

Protocol of Finn et al. (2017), Section 5.3 and Figure 4: on ``eval.num_tasks`` tasks drawn
from an evaluation stream disjoint from every training seed, for k = 0..``eval.num_steps``
collect ``episodes_per_task`` episodes with the current parameters, record each task's mean
return, then take one step of the inner loop (``inner``: step size, estimator) on those
episodes, through the same ``MetaLearner`` as training. The oracle is evaluated at k = 0 only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import SEED_LIMIT
from ..core.checkpoint import load_checkpoint
from ..policies import Policy, policy_from_state
from .build import build_env, build_learner, build_sampler, initial_policy, resolve_checkpoint
from .report import plot_curves, plot_trajectories, summarize, write_tables

log = logging.getLogger(__name__)

METHODS = ("maml", "pretrained", "random", "oracle")


class EvaluationError(ValueError):
    """A checkpoint that cannot be evaluated; the message names the file and the mismatch."""


@dataclass
class Candidate:
    """One policy to evaluate: its method (baseline name), policy, the observation (oracle) and
    action space (normalised or not) it was trained with, source, MLflow run id, training seed,
    and its label: the method and the sweep overrides that set it apart (checkpoints that share
    a label are seeds of one setting, aggregated)."""

    method: str
    policy: Policy
    oracle: bool
    normalize_actions: bool
    source: str
    run_id: str | None = None
    seed: int = 0
    label: str = ""

    def __post_init__(self):
        self.label = self.label or self.method


def evaluation_generator(seed: int) -> torch.Generator:
    """The task/noise stream of evaluation seed ``seed``: torch seed 2**31 + seed, never a training seed."""
    return torch.Generator().manual_seed(SEED_LIMIT + seed)


def load_candidate(reference: str, cfg: DictConfig, tracking_uri: str) -> Candidate:
    """Load and check one checkpoint against the evaluation env.

    Raises:
        EvaluationError: missing file, another env, or an observation size that does not fit.
    """
    try:
        path = resolve_checkpoint(reference, tracking_uri)
        state = load_checkpoint(path)
        policy = policy_from_state(state)
    except (ValueError, RuntimeError, OSError) as err:  # missing, unreadable or not a checkpoint
        message = str(err) if reference in str(err) else f"checkpoint {reference}: {err}"
        raise EvaluationError(message) from err
    if state["env"] != cfg.env.name:
        raise EvaluationError(f"checkpoint {path} was trained on env {state['env']!r}, "
                              f"but the evaluation env is {cfg.env.name!r}")
    oracle = bool(state.get("oracle", False))
    obs_dim = build_env(cfg, 1, 1, oracle).observation_spec["observation"].shape[-1]
    if policy.obs_dim != obs_dim:
        raise EvaluationError(f"checkpoint {path} expects observations of size {policy.obs_dim}, "
                              f"env {cfg.env.name!r} (oracle={oracle}) gives {obs_dim}")
    return Candidate(state["baseline"], policy, oracle, state["config"]["env"]["normalize_actions"], str(path),
                     state.get("mlflow_run_id"), state["config"].get("seed", 0))


def random_candidate(cfg: DictConfig) -> Candidate:
    """The untrained policy of seed ``cfg.seed`` (the same initialisation a training run starts from)."""
    policy = initial_policy(cfg, build_env(cfg, 1, 1, False))
    return Candidate("random", policy, False, cfg.env.normalize_actions, f"random initialisation, seed {cfg.seed}")


def adaptation_curve(candidate: Candidate, cfg: DictConfig, tasks: torch.Tensor, num_steps: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Mean return per task after k = 0..num_steps inner steps.

    Returns ``returns`` of shape ``[num_steps + 1, task]`` and, for k = 0 and k = num_steps, the
    observations of each task's first episode ``[task, time, obs_dim]`` with their masks.
    """
    env = build_env(cfg, tasks.shape[0], cfg.episodes_per_task, candidate.oracle, generator,
                    candidate.normalize_actions)
    learner = build_learner(cfg, candidate.policy, num_steps)
    sampler = build_sampler(cfg, env, candidate.policy, generator)
    theta = {n: v.detach() for n, v in candidate.policy.params().items()}
    batch = learner.meta_batch(sampler, theta, tasks, differentiable=False)
    first, last = batch.supports[0] if batch.supports else batch.query, batch.query
    paths = [(b["observation"][:, 0], b["mask"][:, 0]) for b in (first, last)]
    return batch.returns(), paths


def sweep_references(sweep_dir: Path) -> list[tuple[str, str]]:
    """``(checkpoint, overrides that set its job apart)`` for every ``<sweep_dir>/*/checkpoint.pt``.

    The overrides are those of the job's ``.hydra/overrides.yaml`` whose values differ between the
    jobs, less ``baseline`` (the method) and ``seed`` (seeds of one setting are aggregated).
    """
    jobs = sorted(Path(sweep_dir).glob("*/checkpoint.pt"))
    overrides = []
    for path in jobs:
        listed = path.parent / ".hydra" / "overrides.yaml"
        pairs = [o.lstrip("+~").split("=", 1) for o in (OmegaConf.load(listed) if listed.is_file() else [])]
        overrides.append({k: v for k, v in (p for p in pairs if len(p) == 2)})
    keys = {k for o in overrides for k in o} - {"baseline", "seed"}
    varying = sorted(k for k in keys if len({o.get(k) for o in overrides}) > 1)
    return [(str(p), " ".join(f"{k}={o[k]}" for k in varying if k in o)) for p, o in zip(jobs, overrides)]


def load_candidates(cfg: DictConfig, tracking_uri: str) -> list[Candidate]:
    """Every checkpoint of ``eval.checkpoints`` and ``eval.sweep_dir``, checked, labelled and sorted
    (maml, pretrained, random, oracle), plus the random initialisation unless one is given or
    ``eval.include_random`` is off.

    Raises:
        EvaluationError: nothing to evaluate, or a bad checkpoint (before any work).
    """
    references = [(ref, "") for ref in cfg.eval.checkpoints]
    if cfg.eval.sweep_dir:
        if not Path(cfg.eval.sweep_dir).is_dir():
            raise EvaluationError(f"eval.sweep_dir={cfg.eval.sweep_dir}: no such directory")
        references += sweep_references(Path(cfg.eval.sweep_dir))
    candidates = []
    for reference, overrides in references:
        candidate = load_candidate(reference, cfg, tracking_uri)
        candidate.label = f"{candidate.method} {overrides}".strip()
        candidates.append(candidate)
    if not candidates:
        raise EvaluationError(f"no checkpoint to evaluate in eval.checkpoints={list(cfg.eval.checkpoints)} "
                              f"eval.sweep_dir={cfg.eval.sweep_dir}")
    if cfg.eval.include_random and "random" not in {c.method for c in candidates}:
        candidates.append(random_candidate(cfg))
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(candidates, key=lambda c: (order.get(c.method, len(METHODS)), c.label, c.seed))


def evaluate(cfg: DictConfig, candidates: list[Candidate], out_dir: Path) -> dict:
    """Adaptation curves of ``candidates`` on the same fresh tasks, one row per label.

    Candidates that share a label (the seeds of one setting) are pooled: the mean and the 95%
    interval are over seeds × tasks (``n_seeds``, ``n_tasks`` per seed). Writes ``results.json``
    (``{label: {k: {"mean", "ci95", "n_tasks", "n_seeds"}}}``), ``results.csv``,
    ``adaptation_curve.png`` and, for navigation, ``trajectories.png`` to ``out_dir``.
    """
    tasks = build_env(cfg, 1, 1, False).sample_tasks(cfg.eval.num_tasks, evaluation_generator(cfg.eval.seed))
    curves, paths = {}, {}
    for c in candidates:
        steps = 0 if c.oracle else cfg.eval.num_steps
        returns, path = adaptation_curve(c, cfg, tasks, steps, evaluation_generator(cfg.eval.seed + 1))
        curves.setdefault(c.label, []).append(returns)
        if steps:  # the trajectories before and after adaptation
            paths.setdefault(c.label, path)
    results = {label: summarize(torch.cat(rows, dim=1), len(rows)) for label, rows in curves.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tables(results, out_dir)
    title = f"{cfg.env.name}: return after k inner steps on {cfg.eval.num_tasks} new tasks"
    plot_curves(results, cfg.eval.num_steps, out_dir / "adaptation_curve.png", title)
    if cfg.env.name == "navigation" and paths:
        plot_trajectories(paths, tasks, cfg.eval.num_steps, out_dir / "trajectories.png")
    return results
