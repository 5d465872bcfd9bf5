"""Meta-training: the loop that samples a meta-batch, adapts, meta-updates, tracks and checkpoints."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..algorithms.base import OuterLoop
from ..core.checkpoint import save_checkpoint
from ..core.maml import InnerLoop
from ..core.objective import MetaObjective
from ..core.sampler import Sampler, episode_returns
from ..envs.base import TaskFamily
from ..figures import plot_activation, plot_learning_curve
from ..policies.base import Policy
from ..tracking import NullTracker, Tracker

log = logging.getLogger(__name__)


def closing(signum, frame) -> None:
    """SIGINT once a stop is written: say so, and let the run close."""
    print("maml_rl: already stopping: the checkpoint is written, closing the run", file=sys.stderr)


class Stopped(Exception):
    """Meta-training stopped by a signal (``signum``: SIGINT or SIGTERM) after a finished iteration,
    whose checkpoint is written (``checkpoint``)."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name} after {iteration} iterations")
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint


@dataclass
class TrainerSettings:
    """What the loop itself needs: ``meta_batch_size`` tasks per iteration, ``num_iterations`` in
    all, a checkpoint every ``checkpoint_every``; ``train`` false for a policy that is only
    initialised (the random baseline); ``title`` of the learning curve; ``record``: what every
    checkpoint carries besides the states (the config, to rebuild the run from it)."""

    meta_batch_size: int
    num_iterations: int
    checkpoint_every: int = 50
    train: bool = True
    title: str = "learning curve"
    record: dict = field(default_factory=dict)


class Trainer:
    """MAML meta-training (Finn et al., 2017, Algorithm 3) with a pluggable outer loop.

    Each meta-iteration samples ``meta_batch_size`` tasks of ``family``, collects support
    episodes per task with θ through ``sampler`` (which steps ``sampler.env``), adapts θ'_i with
    ``inner_loop`` (fresh episodes for each step; none for a zero-step inner loop: the baselines
    trained without adaptation), collects query episodes with θ'_i and updates θ with
    ``outer_loop`` on the query surrogate through the inner loop. Every part is handed in
    (``run.build.build_trainer`` builds them from a config).

    Args:
        family: the task family (tasks, conditions, statistics).
        policy: the policy θ.
        inner_loop: the adaptation.
        sampler: episodes of per-task parameters in the family's env, with advantages.
        outer_loop: the meta-update (``OuterLoop``).
        generator: the task and noise stream (shared with ``sampler``; checkpointed).
        run_dir: where checkpoints and figures go.
        settings: the loop's own settings.
        tracker: where metrics and artifacts go (default: nowhere).

    Raises:
        TypeError: if the outer loop's ``step`` returns no ``"kl"`` (the OuterLoop contract).
    """

    def __init__(self, family: TaskFamily, policy: Policy, inner_loop: InnerLoop, sampler: Sampler,
                 outer_loop: OuterLoop, generator: torch.Generator, run_dir: Path, settings: TrainerSettings,
                 tracker: Tracker | None = None):
        self.family, self.policy, self.inner_loop, self.sampler = family, policy, inner_loop, sampler
        self.outer_loop, self.generator, self.settings = outer_loop, generator, settings
        self.run_dir = Path(run_dir)
        self.tracker = tracker or NullTracker()
        self.iteration = 0
        self.recent: list[float] = []  # post-adaptation returns of the last 20 iterations
        self.recent_tasks: list[torch.Tensor] = []  # and their tasks, [meta_batch_size, ...] each
        self.history: dict[str, list[float]] = {"pre": [], "post": []}  # every iteration's returns (learning curve)
        self.tasks: torch.Tensor | None = None  # the tasks of the current meta-batch
        self.activation: dict | None = None  # the policy's parts × task conditions on the last query episodes
        self.stop_signal: int | None = None  # a SIGINT / SIGTERM received: stop after the iteration in flight

    def meta_step(self) -> dict[str, float]:
        """One meta-iteration; returns its metrics."""
        t_start = time.perf_counter()
        self.tasks = self.family.sample_tasks(self.settings.meta_batch_size, self.generator)
        support = self.family.support_tasks(self.tasks)  # where the support episodes are collected
        batch = self.inner_loop.meta_batch(self.sampler, self.policy.params(), self.tasks, support_tasks=support)
        objective = MetaObjective(self.inner_loop, batch.supports, batch.query)
        metrics = dict(batch.timings)
        t0 = time.perf_counter()
        metrics.update(self.outer_loop.step(objective, self.policy.params(), batch.adaptation, self.generator))
        metrics["time_outer"] = time.perf_counter() - t0
        if "kl" not in metrics:
            raise TypeError(f"outer loop {type(self.outer_loop).__name__}: step() must return metrics with 'kl'")
        episodes = [*batch.supports, batch.query]
        metrics["post_adaptation_return"] = episode_returns(batch.query).mean().item()
        metrics["pre_adaptation_return"] = episode_returns(episodes[0]).mean().item()
        steps = sum(b["mask"].sum().item() for b in episodes)
        metrics["env_steps_per_second"] = steps / max(metrics["time_sampling"], 1e-9)
        metrics.update(self.policy.diagnostics(episodes[0], batch.query))
        prefix = self.family.statistics_name  # the family's own statistics, e.g. a backtest's Sharpe ratio
        first = support if batch.supports else self.tasks  # a baseline without inner loop collects no support
        for phase, tasks, b in (("pre", first, episodes[0]), ("post", self.tasks, batch.query)):
            metrics.update({f"{prefix}/{n}_{phase}": v.mean().item()
                            for n, v in self.family.episode_statistics(tasks, b).items()})
        self.activation = self.policy.activation_by_condition(batch.query, self.family.task_conditions(self.tasks))
        for b in episodes:  # after the update: every batch above was scored with the same statistics
            self.policy.observe(b["observation"], b["mask"])
        metrics["time_iteration"] = time.perf_counter() - t_start
        return metrics

    def meta_train(self) -> float:
        """Run the remaining meta-iterations; return the objective, the mean post-adaptation return
        of the last 20 iterations (logged as ``train/objective``).

        If tracking fails between iterations (a tracking server that went away), the state of the
        last finished iteration is checkpointed before the error is raised. A SIGINT (Ctrl-C) or
        SIGTERM lets the iteration in flight finish, checkpoints it and raises ``Stopped``; a second
        Ctrl-C raises ``KeyboardInterrupt`` at once (see ``stop_on_signals``).

        Raises:
            Stopped: after a stop signal, with the checkpoint written.
        """
        settings = self.settings
        last = settings.num_iterations if settings.train else self.iteration  # random: no training
        bar = tqdm(total=last, initial=min(self.iteration, last), desc="meta-train", unit="it", dynamic_ncols=True)
        between_iterations = True
        try:
            with logging_redirect_tqdm(), self.stop_on_signals():  # log lines above the bar, never through it
                for it in range(self.iteration, last):
                    between_iterations = False
                    metrics = self.meta_step()
                    self.record(metrics)
                    between_iterations = True
                    bar.update(1)
                    bar.set_postfix(progress_figures(metrics, self.outer_loop.progress))
                    self.tracker.log_metrics(tracked_metrics(metrics), step=it)
                    if it % 10 == 0 or self.iteration == last:
                        log.info("iteration %d: pre %.2f post %.2f kl %.5f %.2f s", it,
                                 metrics["pre_adaptation_return"], metrics["post_adaptation_return"], metrics["kl"],
                                 metrics["time_iteration"])
                    if self.iteration % settings.checkpoint_every == 0 or self.stop_signal:
                        path = self.checkpoint()
                    if self.stop_signal:
                        raise Stopped(self.stop_signal, self.iteration, path)
        except Exception as err:
            if between_iterations and not isinstance(err, Stopped):
                self.save()
            raise
        finally:
            bar.close()
        objective = sum(self.recent) / len(self.recent) if self.recent else float("nan")
        if self.recent:
            self.tracker.log_metrics({"train/objective": objective}, step=self.iteration - 1)
        self.tracker.log_artifact(self.checkpoint(), "checkpoint")
        return objective

    @contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """While training: SIGINT and SIGTERM ask for a stop after the iteration in flight
        (``stop_signal``); a second SIGINT raises ``KeyboardInterrupt`` at once while the iteration
        is in flight, and once its checkpoint is written only says so (``closing``). A SIGTERM handler
        someone else installed (a cluster launcher's requeue, e.g. submitit's) is left in place,
        and so is everything outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.stop_signal is not None:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                return
            self.stop_signal = signum
            log.warning("%s: stopping once iteration %d has finished, with a checkpoint (Ctrl-C again: stop at once)",
                        signal.Signals(signum).name, self.iteration)

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        mine = [sig for sig, h in previous.items()
                if sig == signal.SIGINT or h in (signal.SIG_DFL, None)]
        for sig in mine:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig in mine:
                signal.signal(sig, previous[sig])
            if self.stop_signal is not None and signal.SIGINT in mine:
                # the stop's checkpoint is written: a Ctrl-C now could only cut the closing of the run short
                # (the tracker's KILLED status, the exit line) and end in a bare KeyboardInterrupt
                signal.signal(signal.SIGINT, closing)

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
            self.tracker.log_artifact(plot_learning_curve(self.history, self.iteration, self.settings.title,
                                                          self.run_dir / "learning_curve.png"))
        if self.activation:  # e.g. which expert acts on which tasks, after adaptation
            title = f"after adaptation, iteration {self.iteration}: activation by task condition"
            self.tracker.log_artifact(plot_activation(self.activation, title, self.run_dir / "activation.png"))
        return path

    def save(self) -> Path:
        """Write ``checkpoint.pt`` in the run dir (atomically)."""
        return save_checkpoint(self.run_dir / "checkpoint.pt", {
            **self.settings.record,
            "policy": self.policy.state_dict(), "policy_kwargs": self.policy.kwargs,
            "optimizer": self.outer_loop.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
            "iteration": self.iteration, "tracking": self.tracker.name, "tracked_run_id": self.tracker.run_id,
            "tracking_uri": self.tracker.uri, "recent_post": self.recent, "recent_tasks": self.recent_tasks,
            "history": self.history, "run_dir": str(self.run_dir.resolve()),
        })

    def load_state(self, state: dict) -> None:
        """Continue from a checkpoint: θ, optimiser and RNG states, iteration.

        The next iterations are then bit-identical (on CPU) to those of the uninterrupted run.
        """
        self.policy.load_state_dict(state["policy"])
        self.outer_loop.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        self.iteration, self.recent = state["iteration"], list(state.get("recent_post", []))
        self.recent_tasks = list(state.get("recent_tasks", []))
        self.history = state.get("history") or {"pre": [], "post": []}


def progress_figures(metrics: dict[str, float], extra: dict[str, str]) -> dict[str, str | int]:
    """What the progress bar shows: pre/post-adaptation return, KL, seconds per iteration, the outer
    loop's own ``extra`` figures (``{label: metric}``, e.g. a line search's steps), env steps per second."""
    figures: dict[str, str | int] = {"pre": f"{metrics['pre_adaptation_return']:.1f}",
                                     "post": f"{metrics['post_adaptation_return']:.1f}",
                                     "kl": f"{metrics['kl']:.4f}", "s_it": f"{metrics['time_iteration']:.2f}"}
    figures.update({label: f"{metrics[name]:g}" for label, name in extra.items() if name in metrics})
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
