"""The task-distribution env every task family implements, its settings, and the env registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, TransformedEnv
from torchrl.envs.transforms import ActionScaling

from ..registry import Registry, Settings


@dataclass
class EnvConfig(Settings):
    """A task family and the paper's settings for it; the top-level ``meta_batch_size``,
    ``episodes_per_task`` and ``inner.lr`` default to its values. Each family subclasses it
    with its name and the settings that differ (defaults: 2D navigation, Finn et al., 2017,
    Section 5.3 and App. A.2: horizon 100, 20 tasks × 20 episodes, α = 0.1). ``eval_lr`` and
    ``eval_episodes_per_task`` are the paper's evaluation protocol for the family, the defaults of
    ``eval.lr`` / ``eval.episodes_per_task`` (navigation: step size 0.1 for the first step and 0.05
    after it, 40 episodes per update; Section 5.3)."""

    name: str = "navigation"
    horizon: int = 100
    meta_batch_size: int = 20
    episodes_per_task: int = 20
    inner_lr: float = 0.1
    eval_lr: list[float] = field(default_factory=lambda: [0.1, 0.05])
    eval_episodes_per_task: int = 40
    normalize_observations: bool = False  # running mean/std of observations in the policy
    normalize_actions: bool = True  # the policy acts in [-1, 1], rescaled to the env's bounds (rllab's normalize)
    rules: ClassVar[dict] = {
        "horizon": (lambda v: v >= 1, ">= 1"),
        "meta_batch_size": (lambda v: v >= 1, ">= 1"),
        "episodes_per_task": (lambda v: v >= 1, ">= 1"),
        "inner_lr": (lambda v: v > 0, "> 0"),
        "eval_lr": (lambda v: len(v) > 0 and min(v) > 0, "a non-empty list of step sizes > 0"),
        "eval_episodes_per_task": (lambda v: v >= 1, ">= 1"),
    }


class TaskEnv(EnvBase):
    """A batch of ``num_tasks × episodes_per_task`` episodes of one task family (torchrl env,
    batch size ``[task, episode]``), the tasks set for the whole batch at once.

    A family implements ``sample_tasks`` (tasks ``[num_tasks, *task_shape]`` from a generator;
    a classmethod where the tasks need no data), ``_reset`` and ``_step`` (torchrl's, batched),
    and declares its specs. A family may also report statistics of its episodes beyond the
    return (``episode_statistics``, e.g. a backtest's Sharpe ratio) and reference strategies on
    the current tasks (``benchmarks``); evaluation reports both.
    ``set_tasks`` checks the shape and stores the tasks in ``self.tasks``; with ``oracle`` the
    family appends the task parameters to its observation. Families whose construction needs
    more than these arguments override ``from_config``.

    Args:
        num_tasks: tasks in the meta-batch (≥ 1).
        episodes_per_task: parallel episodes per task (≥ 1).
        oracle: append the task parameters to the observation (the oracle baseline).

    Raises:
        ValueError: if ``num_tasks`` or ``episodes_per_task`` is below 1.
    """

    task_shape: ClassVar[tuple[int, ...]] = ()
    statistics: ClassVar[tuple[str, ...]] = ()  # the names ``episode_statistics`` returns (a backtest's)

    def __init__(self, num_tasks: int, episodes_per_task: int, oracle: bool = False):
        if num_tasks < 1 or episodes_per_task < 1:
            raise ValueError(f"num_tasks and episodes_per_task must be >= 1, got {num_tasks}, {episodes_per_task}")
        super().__init__(batch_size=torch.Size([num_tasks, episodes_per_task]))
        self.oracle = oracle
        self.tasks = torch.zeros(num_tasks, *self.task_shape, dtype=torch.float64)

    @classmethod
    def from_config(cls, config: EnvConfig, num_tasks: int, episodes_per_task: int, oracle: bool, threads: int,
                    generator: torch.Generator | None) -> TaskEnv:
        """The env for one meta-batch; ``threads`` and ``generator`` (reset noise) where the family uses them."""
        return cls(num_tasks, episodes_per_task, oracle=oracle)

    def sample_tasks(self, num_tasks: int, generator: torch.Generator, split: str = "train") -> torch.Tensor:
        """Task parameters ``[num_tasks, *task_shape]`` (float64) for ``split``: ``"train"`` (meta-training
        and the validation tasks that choose step sizes) or ``"test"`` (evaluation). Families whose
        tasks are drawn from one distribution ignore ``split`` (evaluation draws from a disjoint
        random stream instead); families on recorded data keep the test tasks out of sample."""
        raise NotImplementedError

    def episode_statistics(self, episodes: TensorDictBase) -> dict[str, torch.Tensor]:
        """Statistics of every episode on the current tasks beyond its return, ``{name: [task, episode]}``
        (``episodes`` ``[task, episode, time]`` with ``reward`` and ``mask``); none by default."""
        return {}

    def benchmarks(self) -> dict[str, torch.Tensor]:
        """Rewards of reference strategies on the current tasks, ``{name: [task, time]}`` (e.g. buy-and-hold);
        none by default."""
        return {}

    @classmethod
    def task_conditions(cls, tasks: torch.Tensor) -> list[str]:
        """A readable bucket per task (``tasks`` ``[num_tasks, *task_shape]``), to show which part
        of a policy acts under which conditions (e.g. a mixture's experts); one bucket by default."""
        return ["all"] * tasks.shape[0]

    def set_tasks(self, tasks: torch.Tensor) -> None:
        """Set the task parameters, ``[num_tasks, *task_shape]``.

        Raises:
            ValueError: if the shape is not ``[num_tasks, *task_shape]``.
        """
        if tasks.shape != self.tasks.shape:
            raise ValueError(f"tasks must have shape {tuple(self.tasks.shape)}, got {tuple(tasks.shape)}")
        self.tasks = tasks.to(torch.float64)


ENVS = Registry("env")


def make_env(config: EnvConfig, num_tasks: int, episodes_per_task: int, oracle: bool = False, threads: int = 0,
             generator: torch.Generator | None = None, normalize_actions: bool | None = None) -> EnvBase:
    """Build the env named ``config.name`` for a meta-batch; ``oracle`` appends the task parameters.

    ``threads`` (0 = every core) and ``generator`` (reset noise) apply to the families that use
    them (MuJoCo). With action normalisation (``normalize_actions``, by default
    ``config.normalize_actions``) the policy acts in ``[-1, 1]`` per coordinate and torchrl's
    ``ActionScaling`` maps that affinely onto the env's action bounds, which the env then clips
    to: rllab's ``normalize`` wrapper, through which the MAML code (Finn et al., 2017) trains
    every task family. It changes only 2D navigation (bounds ±0.1); the MuJoCo actuators
    already range over ``[-1, 1]``.

    Raises:
        ValueError: for an unknown env name (lists the known ones).
    """
    env = ENVS[config.name].cls.from_config(config, num_tasks, episodes_per_task, oracle, threads, generator)
    normalize_actions = config.normalize_actions if normalize_actions is None else normalize_actions
    return TransformedEnv(env, ActionScaling()) if normalize_actions else env

