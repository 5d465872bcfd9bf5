"""Meta-training: the loop that samples a meta-batch, adapts, meta-updates, tracks and checkpoints."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..core.checkpoint import save_checkpoint
from ..core.objective import MetaObjective
from ..core.sampler import episode_returns
from ..tracking import NullTracker, Tracker
from .build import build_env, build_learner, build_outer_loop, build_sampler, initial_policy, task_conditions
from .report import plot_activation, plot_learning_curve

log = logging.getLogger(__name__)


class Trainer:
    """MAML meta-training (Finn et al., 2017, Algorithm 3) with a pluggable outer loop.

    Each meta-iteration samples ``meta_batch_size`` tasks, collects ``episodes_per_task``
    support episodes per task with θ, adapts θ'_i by ``inner.num_steps`` VPG steps (fresh
    episodes for each step; none for the baselines trained without an inner loop), collects
    query episodes with θ'_i and updates θ on the query surrogate through the inner loop.

    Args:
        cfg: the composed, validated config.
        run_dir: where checkpoints go (the Hydra output dir).
        tracker: where metrics and artifacts go (default: nowhere).

    Raises:
        TypeError: if the outer loop's ``step`` returns no ``"kl"`` (the OuterLoop contract).
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, tracker: Tracker | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.tracker = tracker or NullTracker()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.oracle = cfg.baseline.oracle
        self.env = build_env(cfg, cfg.meta_batch_size, cfg.episodes_per_task, self.oracle, self.generator)
        self.policy = initial_policy(cfg, self.env)
        self.algorithm = build_outer_loop(cfg)
        self.learner = build_learner(cfg, self.policy, None if cfg.baseline.inner_loop else 0)
        self.sampler = build_sampler(cfg, self.env, self.policy, self.generator)
        self.iteration = 0
        self.recent: list[float] = []  # post-adaptation returns of the last 20 iterations
        self.recent_tasks: list[torch.Tensor] = []  # and their tasks, [meta_batch_size, ...] each
        self.history: dict[str, list[float]] = {"pre": [], "post": []}  # every iteration's returns (learning curve)
        self.tasks: torch.Tensor | None = None  # the tasks of the current meta-batch
        self.activation: dict | None = None  # the policy's parts × task conditions on the last query episodes

    def meta_step(self) -> dict[str, float]:
        """One meta-iteration; returns its metrics."""
        t_start = time.perf_counter()
        self.tasks = self.env.sample_tasks(self.cfg.meta_batch_size, self.generator)
        batch = self.learner.meta_batch(self.sampler, self.policy.params(), self.tasks)
        objective = MetaObjective(self.learner, batch.supports, batch.query)
        metrics = dict(batch.timings)
        t0 = time.perf_counter()
        metrics.update(self.algorithm.step(objective, self.policy.params(), batch.adaptation, self.generator))
        metrics["time_outer"] = time.perf_counter() - t0
        if "kl" not in metrics:
            raise TypeError(f"algorithm {self.cfg.algorithm.name!r}: step() must return metrics with 'kl'")
        episodes = [*batch.supports, batch.query]
        metrics["post_adaptation_return"] = episode_returns(batch.query).mean().item()
        metrics["pre_adaptation_return"] = episode_returns(episodes[0]).mean().item()
        steps = sum(b["mask"].sum().item() for b in episodes)
        metrics["env_steps_per_second"] = steps / max(metrics["time_sampling"], 1e-9)
        metrics.update(self.policy.diagnostics(episodes[0], batch.query))
        for phase, b in (("pre", episodes[0]), ("post", batch.query)):  # e.g. a trading backtest's Sharpe ratio
            metrics.update({f"backtest/{n}_{phase}": v.mean().item() for n, v in self.env.episode_statistics(b).items()})
        self.activation = self.policy.activation_by_condition(batch.query, task_conditions(self.cfg, self.tasks))
        for b in episodes:  # after the update: every batch above was scored with the same statistics
            self.policy.observe(b["observation"], b["mask"])
        metrics["time_iteration"] = time.perf_counter() - t_start
        return metrics

    def meta_train(self) -> float:
        """Run the remaining meta-iterations; return the objective, the mean post-adaptation return
        of the last 20 iterations (logged as ``train/objective``).

        If tracking fails between iterations (a tracking server that went away), the state of the
        last finished iteration is checkpointed before the error is raised.
        """
        cfg = self.cfg
        last = cfg.num_iterations if cfg.baseline.train else self.iteration  # random: no training
        bar = tqdm(range(self.iteration, last), desc="meta-train", unit="it", dynamic_ncols=True)
        between_iterations = True
        try:
            with logging_redirect_tqdm():  # log lines above the bar, never through it
                for it in bar:
                    between_iterations = False
                    metrics = self.meta_step()
                    self.record(metrics)
                    between_iterations = True
                    bar.set_postfix(progress_figures(metrics))
                    if metrics.get("step_accepted") == 0.0:
                        log.warning("iteration %d: line search found no acceptable step; θ unchanged", it)
                    self.tracker.log_metrics(tracked_metrics(metrics), step=it)
                    if it % 10 == 0 or self.iteration == last:
                        log.info("iteration %d: pre %.2f post %.2f kl %.5f %.2f s", it,
                                 metrics["pre_adaptation_return"], metrics["post_adaptation_return"], metrics["kl"],
                                 metrics["time_iteration"])
                    if self.iteration % cfg.checkpoint_every == 0:
                        self.checkpoint()
        except Exception:
            if between_iterations:
                self.save()
            raise
        objective = sum(self.recent) / len(self.recent) if self.recent else float("nan")
        if self.recent:
            self.tracker.log_metrics({"train/objective": objective}, step=self.iteration - 1)
        self.tracker.log_artifact(self.checkpoint(), "checkpoint")
        return objective

    def record(self, metrics: dict[str, float]) -> None:
        """Count a finished iteration and keep its returns and tasks."""
        self.iteration += 1
        self.recent = (self.recent + [metrics["post_adaptation_return"]])[-20:]
        self.recent_tasks = (self.recent_tasks + [self.tasks])[-20:]
        self.history["pre"].append(metrics["pre_adaptation_return"])
        self.history["post"].append(metrics["post_adaptation_return"])

    def checkpoint(self) -> Path:
        """``save``, and the learning curve as ``learning_curve.png`` (run dir and tracked run), with the
        policy's activation by task condition as ``activation.png`` if it has one (a mixture's experts)."""
        path = self.save()
        if self.history["post"]:
            title = f"{self.cfg.baseline.name}-{self.cfg.algorithm.name} on {self.cfg.env.name}, seed {self.cfg.seed}"
            self.tracker.log_artifact(plot_learning_curve(self.history, self.iteration, title,
                                                          self.run_dir / "learning_curve.png"))
        if self.activation:  # e.g. which expert acts on which tasks, after adaptation
            title = f"after adaptation, iteration {self.iteration}: activation by task condition"
            self.tracker.log_artifact(plot_activation(self.activation, title, self.run_dir / "activation.png"))
        return path

    def save(self) -> Path:
        """Write ``checkpoint.pt`` in the run dir (atomically)."""
        return save_checkpoint(self.run_dir / "checkpoint.pt", {
            "policy": self.policy.state_dict(), "policy_kwargs": self.policy.kwargs,
            "optimizer": self.algorithm.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
            "iteration": self.iteration, "config": OmegaConf.to_container(self.cfg, resolve=True),
            "env": self.cfg.env.name, "baseline": self.cfg.baseline.name, "oracle": self.oracle,
            "mlflow_run_id": self.tracker.run_id, "tracking_uri": self.tracker.uri, "recent_post": self.recent,
            "recent_tasks": self.recent_tasks, "history": self.history, "run_dir": str(self.run_dir.resolve()),
        })

    def load_state(self, state: dict) -> None:
        """Continue from a checkpoint: θ, optimiser and RNG states, iteration.

        The next iterations are then bit-identical (on CPU) to those of the uninterrupted run.
        """
        self.policy.load_state_dict(state["policy"])
        self.algorithm.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        self.iteration, self.recent = state["iteration"], list(state.get("recent_post", []))
        self.recent_tasks = list(state.get("recent_tasks", []))
        self.history = state.get("history") or {"pre": [], "post": []}


def progress_figures(metrics: dict[str, float]) -> dict[str, str | int]:
    """What the progress bar shows: pre/post-adaptation return, KL, seconds per iteration, TRPO's line search."""
    figures: dict[str, str | int] = {"pre": f"{metrics['pre_adaptation_return']:.1f}",
                                     "post": f"{metrics['post_adaptation_return']:.1f}",
                                     "kl": f"{metrics['kl']:.4f}", "s_it": f"{metrics['time_iteration']:.2f}"}
    if "line_search_steps" in metrics:
        figures["ls"] = int(metrics["line_search_steps"])
    figures["sps"] = f"{metrics['env_steps_per_second']:.0f}"  # env steps per second of sampling
    return figures


HEADLINES = ("pre_adaptation_return", "post_adaptation_return")


def tracked_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Metric names grouped for the tracker's chart view: ``time/…`` (seconds, env steps per second)
    and ``train/…`` (the rest); the pre- and post-adaptation returns also under their own names."""
    out = {name: metrics[name] for name in HEADLINES if name in metrics}
    for name, value in metrics.items():
        if name.startswith("time_"):
            out[f"time/{name[5:]}"] = value
        elif name == "env_steps_per_second":
            out[f"time/{name}"] = value
        else:
            out[f"train/{name}"] = value
    return out
