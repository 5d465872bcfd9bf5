"""Meta-training: sample a meta-batch, adapt per task, meta-update; track and checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict
from tqdm import tqdm

from .advantages import compute_advantages
from .algorithms.ppo import PPO
from .algorithms.trpo import TRPO
from .checkpoint import save_checkpoint
from .envs import make_env
from .inner import Adaptation, inner_step
from .objective import MetaObjective
from .policy import GaussianMLPPolicy, Params, expand_params
from .sampler import episode_returns, rollout
from .tracking import Tracker

log = logging.getLogger(__name__)

ALGORITHMS = {"trpo": TRPO, "ppo": PPO}


def make_algorithm(algorithm_cfg: DictConfig):
    """The outer-loop optimiser named ``algorithm.name`` with the group's settings."""
    kwargs = {k: v for k, v in OmegaConf.to_container(algorithm_cfg).items() if k != "name"}
    return ALGORITHMS[algorithm_cfg.name](**kwargs)


def sample_episodes(env, policy: GaussianMLPPolicy, params: Params, cfg: DictConfig,
                    generator: torch.Generator) -> TensorDict:
    """Roll out θ_i (detached) in every task of ``env`` and add advantages: ``[task, episode, time]``."""
    episodes = rollout(env, policy, {k: v.detach() for k, v in params.items()}, cfg.env.horizon, generator)
    return compute_advantages(episodes, cfg.gamma, cfg.gae_lambda)


def initial_policy(cfg: DictConfig, env) -> GaussianMLPPolicy:
    """The policy θ_0 of seed ``cfg.seed`` sized for ``env`` (the random baseline's policy)."""
    torch.manual_seed(cfg.seed)
    return GaussianMLPPolicy(obs_dim=env.observation_spec["observation"].shape[-1], act_dim=env.action_spec.shape[-1],
                             hidden_sizes=tuple(cfg.policy.hidden_sizes), activation=cfg.policy.activation,
                             init_std=cfg.policy.init_std,
                             normalize_observations=cfg.env.normalize_observations)


class Trainer:
    """MAML meta-training (Finn et al., 2017, Algorithm 3) with a pluggable outer loop.

    Each meta-iteration samples ``meta_batch_size`` tasks, collects ``episodes_per_task``
    support episodes per task with θ, adapts θ'_i by ``inner.num_steps`` VPG steps (fresh
    episodes for each step), collects query episodes with θ'_i and updates θ on the query
    surrogate through the inner loop.

    Args:
        cfg: the composed, validated config.
        run_dir: where checkpoints go (the Hydra output dir).
        tracker: MLflow tracker, or None to track nothing (tests, benchmarks).
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, tracker: Tracker | None = None):
        self.cfg, self.run_dir, self.tracker = cfg, Path(run_dir), tracker
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.oracle = cfg.env.oracle or cfg.baseline.oracle
        self.num_inner_steps = cfg.inner.num_steps if cfg.baseline.inner_loop else 0
        self.env = make_env(cfg.env, cfg.meta_batch_size, cfg.episodes_per_task, self.oracle, cfg.threads,
                            self.generator)
        self.policy = initial_policy(cfg, self.env)
        self.algorithm = make_algorithm(cfg.algorithm)
        self.iteration = 0
        self.recent: list[float] = []  # post-adaptation returns of the last 20 iterations
        self.recent_tasks: list[torch.Tensor] = []  # and their tasks, [meta_batch_size, ...] each
        self.tasks: torch.Tensor | None = None  # the tasks of the current meta-batch

    # ----------------------------------------------------------------- one meta-batch
    def sample(self, params: Params) -> TensorDict:
        return sample_episodes(self.env, self.policy, params, self.cfg, self.generator)

    def meta_batch(self):
        """Sample tasks, support episodes, the inner loop and query episodes.

        Returns ``(supports, query, adaptation, timings)``: one support batch per inner step
        (none for the baselines trained without an inner loop), the query batch, each
        ``[task, episode, time]``, the differentiable adaptation from θ, and seconds spent
        sampling and adapting. The tasks stay in ``self.tasks``.
        """
        cfg = self.cfg
        self.tasks = self.env.sample_tasks(cfg.meta_batch_size, self.generator)
        self.env.set_tasks(self.tasks)
        adaptation = Adaptation([expand_params(self.policy.params(), cfg.meta_batch_size)], lr=cfg.inner.lr,
                                estimator=cfg.inner.estimator)
        supports, t_sample, t_inner = [], 0.0, 0.0
        for _ in range(self.num_inner_steps):
            t0 = time.perf_counter()
            supports.append(self.sample(adaptation.adapted))
            t1 = time.perf_counter()
            inner_step(self.policy, adaptation, supports[-1], cfg.inner.first_order)
            t_sample, t_inner = t_sample + t1 - t0, t_inner + time.perf_counter() - t1
        t0 = time.perf_counter()
        query = self.sample(adaptation.adapted)
        t_sample += time.perf_counter() - t0
        return supports, query, adaptation, {"time_sampling": t_sample, "time_inner": t_inner}

    def meta_step(self) -> dict[str, float]:
        """One meta-iteration; returns its metrics."""
        t_start = time.perf_counter()
        supports, query, adaptation, metrics = self.meta_batch()
        inner = self.cfg.inner
        objective = MetaObjective(self.policy, supports, query, inner.lr, inner.first_order, inner.estimator)
        t0 = time.perf_counter()
        metrics.update(self.algorithm.step(objective, self.policy.params(), adaptation, self.generator))
        metrics["time_outer"] = time.perf_counter() - t0
        post = episode_returns(query).mean().item()
        metrics["post_adaptation_return"] = post
        metrics["pre_adaptation_return"] = episode_returns(supports[0]).mean().item() if supports else post
        steps = sum(b["mask"].sum().item() for b in [*supports, query])
        metrics["env_steps_per_second"] = steps / max(metrics["time_sampling"], 1e-9)
        metrics["policy_std"] = self.policy.log_std.detach().exp().mean().item()
        if self.policy.obs_norm is not None:  # after the update: every batch above saw the same statistics
            for batch in [*supports, query]:
                self.policy.obs_norm.update(batch["observation"], batch["mask"])
        metrics["time_iteration"] = time.perf_counter() - t_start
        return metrics

    # ----------------------------------------------------------------- the loop
    def meta_train(self) -> float:
        """Run the remaining meta-iterations; return the mean post-adaptation return of the last 20."""
        cfg = self.cfg
        last = cfg.num_iterations if cfg.baseline.train else self.iteration  # random: no training
        bar = tqdm(range(self.iteration, last), desc="meta-train", unit="it", dynamic_ncols=True)
        for it in bar:
            metrics = self.meta_step()
            self.iteration = it + 1
            self.recent = (self.recent + [metrics["post_adaptation_return"]])[-20:]
            self.recent_tasks = (self.recent_tasks + [self.tasks])[-20:]
            figures = {"pre": f"{metrics['pre_adaptation_return']:.1f}", "post": f"{metrics['post_adaptation_return']:.1f}",
                       "kl": f"{metrics['kl']:.4f}", "s_it": f"{metrics['time_iteration']:.2f}"}
            if "line_search_steps" in metrics:  # TRPO
                figures["ls"] = int(metrics["line_search_steps"])
            bar.set_postfix(figures)
            if metrics.get("step_accepted") == 0.0:
                log.warning("iteration %d: line search found no acceptable step; θ unchanged", it)
            if self.tracker:
                self.tracker.log_metrics(metrics, step=it)
            if it % 10 == 0 or self.iteration == last:
                log.info("iteration %d: pre %.2f post %.2f kl %.5f %.2f s", it, metrics["pre_adaptation_return"],
                         metrics["post_adaptation_return"], metrics["kl"], metrics["time_iteration"])
            if self.iteration % cfg.checkpoint_every == 0:
                self.save()
        path = self.save()
        if self.tracker:
            self.tracker.log_artifact(path, "checkpoint")
        return sum(self.recent) / len(self.recent) if self.recent else float("nan")

    def save(self) -> Path:
        """Write ``checkpoint.pt`` in the run dir (atomically)."""
        return save_checkpoint(self.run_dir / "checkpoint.pt", {
            "policy": self.policy.state_dict(), "policy_kwargs": self.policy.kwargs,
            "optimizer": getattr(self.algorithm, "state_dict", dict)(),
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
            "iteration": self.iteration, "config": OmegaConf.to_container(self.cfg, resolve=True),
            "env": self.cfg.env.name, "baseline": self.cfg.baseline.name, "oracle": self.oracle,
            "mlflow_run_id": self.tracker.run_id if self.tracker else None,
            "tracking_uri": self.tracker.uri if self.tracker else None, "recent_post": self.recent,
            "recent_tasks": self.recent_tasks,
            "run_dir": str(self.run_dir.resolve()),
        })

    def load_state(self, state: dict) -> None:
        """Continue from a checkpoint: θ, optimiser and RNG states, iteration.

        The next iterations are then bit-identical (on CPU) to those of the uninterrupted run.
        """
        self.policy.load_state_dict(state["policy"])
        if hasattr(self.algorithm, "load_state_dict"):
            self.algorithm.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        self.iteration, self.recent = state["iteration"], list(state.get("recent_post", []))
        self.recent_tasks = list(state.get("recent_tasks", []))
