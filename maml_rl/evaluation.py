"""``mode=evaluate``: adaptation curves of MAML and its baselines on fresh tasks.

Protocol of Finn et al. (2017), Section 5.3 and Figure 4: on ``eval.num_tasks`` tasks drawn
from an evaluation stream disjoint from every training seed, for k = 0..``eval.num_steps``
collect ``episodes_per_task`` episodes with the current parameters, record each task's mean
return, then take one VPG step of size ``inner.lr`` on those episodes. The oracle is
evaluated at k = 0 only.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import torch
from omegaconf import DictConfig

from .checkpoint import load_checkpoint, resolve_checkpoint
from .config import SEED_LIMIT
from .envs import make_env
from .inner import Adaptation, inner_step
from .policy import GaussianMLPPolicy, expand_params
from .sampler import episode_returns
from .trainer import initial_policy, sample_episodes

matplotlib.use("Agg")
import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

METHODS = ("maml", "pretrained", "random", "oracle")


class EvaluationError(ValueError):
    """A checkpoint that cannot be evaluated; the message names the file and the mismatch."""


@dataclass
class Candidate:
    """One policy to evaluate: its method (baseline name), policy, the observation (oracle) and
    action space (normalised or not) it was trained with, source and MLflow run id."""

    method: str
    policy: GaussianMLPPolicy
    oracle: bool
    normalize_actions: bool
    source: str
    run_id: str | None = None


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
    except (ValueError, RuntimeError, OSError) as err:  # missing, unreadable or not a checkpoint
        message = str(err) if reference in str(err) else f"checkpoint {reference}: {err}"
        raise EvaluationError(message) from err
    if state["env"] != cfg.env.name:
        raise EvaluationError(f"checkpoint {path} was trained on env {state['env']!r}, "
                              f"but the evaluation env is {cfg.env.name!r}")
    oracle = bool(state.get("oracle", False))
    obs_dim = make_env(cfg.env, 1, 1, oracle).observation_spec["observation"].shape[-1]
    if state["policy_kwargs"]["obs_dim"] != obs_dim:
        raise EvaluationError(f"checkpoint {path} expects observations of size {state['policy_kwargs']['obs_dim']}, "
                              f"env {cfg.env.name!r} (oracle={oracle}) gives {obs_dim}")
    policy = GaussianMLPPolicy(**state["policy_kwargs"])
    policy.load_state_dict(state["policy"])
    return Candidate(state["baseline"], policy, oracle, state["config"]["env"]["normalize_actions"], str(path),
                     state.get("mlflow_run_id"))


def random_candidate(cfg: DictConfig) -> Candidate:
    """The untrained policy of seed ``cfg.seed`` (the same initialisation a training run starts from)."""
    policy = initial_policy(cfg, make_env(cfg.env, 1, 1, False))
    return Candidate("random", policy, False, cfg.env.normalize_actions, f"random initialisation, seed {cfg.seed}")


def adaptation_curve(candidate: Candidate, cfg: DictConfig, tasks: torch.Tensor, num_steps: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Mean return per task after k = 0..num_steps VPG steps.

    Returns ``returns`` of shape ``[num_steps + 1, task]`` and, for k = 0 and k = num_steps, the
    positions of each task's first episode ``[task, time, obs_dim]`` with their masks.
    """
    env = make_env(cfg.env, tasks.shape[0], cfg.episodes_per_task, candidate.oracle, cfg.threads, generator,
                   candidate.normalize_actions)
    env.set_tasks(tasks)
    theta = {n: v.detach() for n, v in candidate.policy.params().items()}
    adaptation = Adaptation([expand_params(theta, tasks.shape[0])], lr=cfg.inner.lr)
    returns, paths = [], []
    for k in range(num_steps + 1):
        episodes = sample_episodes(env, candidate.policy, adaptation.adapted, cfg, generator)
        returns.append(episode_returns(episodes).mean(1))
        if k in (0, num_steps):
            paths.append((episodes["observation"][:, 0], episodes["mask"][:, 0]))
        if k < num_steps:
            inner_step(candidate.policy, adaptation, episodes, first_order=True)
    return torch.stack(returns), paths


def summarize(returns: torch.Tensor) -> dict[int, dict[str, float]]:
    """Mean and 95% confidence half-width (normal approximation, 1.96·s/√n) over tasks, per k."""
    n = returns.shape[1]
    return {k: {"mean": row.mean().item(), "ci95": 1.96 * row.std().item() / math.sqrt(n), "n_tasks": n}
            for k, row in enumerate(returns.double())}


def evaluate(cfg: DictConfig, out_dir: Path, tracking_uri: str) -> tuple[dict, list[Candidate]]:
    """Evaluate every checkpoint of ``eval.checkpoints`` / ``eval.sweep_dir`` (+ random).

    Writes ``results.json`` (``{method: {k: {"mean", "ci95", "n_tasks"}}}``), ``results.csv``,
    ``adaptation_curve.png`` and, for navigation, ``trajectories.png`` to ``out_dir``.

    Raises:
        EvaluationError: no checkpoint given, a bad checkpoint, or two checkpoints of one method.
    """
    references = list(cfg.eval.checkpoints)
    if cfg.eval.sweep_dir:
        references += [str(p) for p in sorted(Path(cfg.eval.sweep_dir).glob("*/checkpoint.pt"))]
    candidates = [load_candidate(ref, cfg, tracking_uri) for ref in references]
    methods = [c.method for c in candidates]
    if len(set(methods)) != len(methods):
        raise EvaluationError(f"one checkpoint per method, got methods {methods} from {references}")
    if cfg.eval.include_random and "random" not in methods:
        candidates.append(random_candidate(cfg))
    if not candidates:
        raise EvaluationError("nothing to evaluate: give eval.checkpoints=[...] or eval.sweep_dir=...")
    candidates.sort(key=lambda c: METHODS.index(c.method) if c.method in METHODS else len(METHODS))

    tasks = make_env(cfg.env, 1, 1).sample_tasks(cfg.eval.num_tasks, evaluation_generator(cfg.eval.seed))
    results, paths = {}, {}
    for c in candidates:
        steps = 0 if c.method == "oracle" else cfg.eval.num_steps
        returns, paths[c.method] = adaptation_curve(c, cfg, tasks, steps, evaluation_generator(cfg.eval.seed + 1))
        results[c.method] = summarize(returns)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tables(results, out_dir)
    plot_curves(results, cfg.eval.num_steps, out_dir / "adaptation_curve.png")
    if cfg.env.name == "navigation":
        plot_trajectories(paths, tasks, cfg.eval.num_steps, out_dir / "trajectories.png")
    return results, candidates


def write_tables(results: dict, out_dir: Path) -> None:
    """``results.json`` (the contract) and ``results.csv`` (one row per method and k)."""
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "k", "mean", "ci95", "n_tasks"])
        for method, rows in results.items():
            for k, r in rows.items():
                writer.writerow([method, k, f"{r['mean']:.4f}", f"{r['ci95']:.4f}", r["n_tasks"]])


def format_table(results: dict, num_steps: int) -> str:
    """The method × k table as text: ``mean ± ci95`` per cell."""
    header = f"{'method':<12}" + "".join(f"{f'k={k}':>18}" for k in range(num_steps + 1))
    lines = [header]
    for method, rows in results.items():
        cells = [f"{rows[k]['mean']:8.2f} ± {rows[k]['ci95']:5.2f}" if k in rows else "-" for k in range(num_steps + 1)]
        lines.append(f"{method:<12}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def plot_curves(results: dict, num_steps: int, path: Path) -> None:
    """Average return vs. number of gradient steps, one line per method; the oracle as a line."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = list(range(num_steps + 1))
    for method, rows in results.items():
        if method == "oracle":
            ax.axhline(rows[0]["mean"], color="k", linestyle="--", label="oracle")
            continue
        means = [rows[k]["mean"] for k in ks]
        ci = [rows[k]["ci95"] for k in ks]
        ax.errorbar(ks, means, yerr=ci, marker="o", capsize=3, label=method)
    ax.set_xlabel("number of gradient steps")
    ax.set_ylabel("average return")
    ax.set_xticks(ks)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_trajectories(paths: dict, tasks: torch.Tensor, steps: int, path: Path, task: int = 0) -> None:
    """Figure 4's lower panels: one episode before adaptation and after the last step, goal marked."""
    methods = [m for m in paths if m != "oracle"]
    fig, axes = plt.subplots(1, max(len(methods), 1), figsize=(4 * max(len(methods), 1), 4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        (pre, pre_mask), (post, post_mask) = paths[method][0], paths[method][-1]
        curves = [((pre, pre_mask), "--", "before adaptation"), ((post, post_mask), "-", f"after {steps} steps")]
        for (obs, mask), style, label in curves:
            xy = obs[task][mask[task].bool()][:, :2]  # states before each step, from the origin
            ax.plot(xy[:, 0], xy[:, 1], style, label=label)
        ax.plot(*tasks[task].tolist(), "r*", markersize=14, label="goal")
        ax.set_title(method)
        ax.set_xlim(-0.6, 0.6)
        ax.set_ylim(-0.6, 0.6)
        ax.set_aspect("equal")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
