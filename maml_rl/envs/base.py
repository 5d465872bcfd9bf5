"""Task families (``TaskFamily``: tasks, sizes, report hooks), their simulators (``TaskEnv``), their
settings and the registry of families."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, TransformedEnv
from torchrl.envs.transforms import ActionScaling

from .settings import ENVS, EnvConfig


class TaskEnv(EnvBase):
    """A batch of ``num_tasks × episodes_per_task`` episodes of one task family (torchrl env,
    batch size ``[task, episode]``), the tasks set for the whole batch at once: the simulator of a
    ``TaskFamily``, which builds it.

    A simulator implements ``_reset`` and ``_step`` (torchrl's, batched) and declares its specs.
    ``set_tasks`` checks the shape and stores the tasks in ``self.tasks``; with ``oracle`` the
    simulator appends the task parameters to its observation.

    Args:
        num_tasks: tasks in the meta-batch (≥ 1).
        episodes_per_task: parallel episodes per task (≥ 1).
        oracle: append the task parameters to the observation (the oracle baseline).

    Raises:
        ValueError: if ``num_tasks`` or ``episodes_per_task`` is below 1.
    """

    task_shape: ClassVar[tuple[int, ...]] = ()

    def __init__(self, num_tasks: int, episodes_per_task: int, oracle: bool = False):
        if num_tasks < 1 or episodes_per_task < 1:
            raise ValueError(f"num_tasks and episodes_per_task must be >= 1, got {num_tasks}, {episodes_per_task}")
        super().__init__(batch_size=torch.Size([num_tasks, episodes_per_task]))
        self.oracle = oracle
        self.tasks = torch.zeros(num_tasks, *self.task_shape, dtype=torch.float64)

    def set_tasks(self, tasks: torch.Tensor) -> None:
        """Set the task parameters, ``[num_tasks, *task_shape]``.

        Raises:
            ValueError: if the shape is not ``[num_tasks, *task_shape]``.
        """
        if tasks.shape != self.tasks.shape:
            raise ValueError(f"tasks must have shape {tuple(self.tasks.shape)}, got {tuple(tasks.shape)}")
        self.tasks = tasks.to(torch.float64)


class TaskFamily:
    """A task distribution, apart from its simulator: built once per job from its settings (and
    the data it reads), it samples tasks, names their conditions, knows the observation and action
    sizes, and builds the batched env (``make_env``) for any number of tasks × episodes.

    A family implements ``sample_tasks`` and ``env`` and sets ``observation_size`` /
    ``action_size``. Optional hooks, each with a neutral default, let a family report more than
    the return without the run layer knowing it: ``task_conditions`` (buckets of tasks, to show
    which part of a policy acts where), ``statistics`` / ``episode_statistics`` (e.g. a
    backtest's Sharpe ratio, reported under ``statistics_name``), ``references`` (fixed
    strategies scored beside the policies, e.g. buy-and-hold), ``task_groups`` and
    ``task_blocks`` (per-asset rows; intervals over dependent tasks) and ``reports`` (pictures and
    tables of an evaluation, e.g. 2D paths).

    Args:
        config: the family's settings (its ``EnvConfig`` subclass).
        threads: simulator threads where the family uses them (0 = every core).
    """

    task_shape: ClassVar[tuple[int, ...]] = ()
    statistics: ClassVar[tuple[str, ...]] = ()  # the names ``episode_statistics`` returns
    statistics_name: ClassVar[str] = "statistics"  # what they are called in tables and metric names
    benchmark: ClassVar[str | None] = None  # a reference every method is compared with, paired (``references``)

    def __init__(self, config: EnvConfig, threads: int = 0):
        self.config, self.threads = config, threads

    def sample_tasks(self, num_tasks: int, generator: torch.Generator, split: str = "train") -> torch.Tensor:
        """Task parameters ``[num_tasks, *task_shape]`` (float64) for ``split``: ``"train"``
        (meta-training), ``"validation"`` (the tasks that choose evaluation step sizes) or ``"test"``
        (evaluation). Families whose tasks are drawn from one distribution ignore ``split``
        (evaluation and validation draw from disjoint random streams instead); families on
        recorded data keep each split's tasks in its own part of the data.

        Raises:
            ValueError: ``num_tasks`` more than a split with a fixed set of tasks holds.
        """
        raise NotImplementedError

    def observation_size(self, oracle: bool = False) -> int:
        """The policy's input size (with ``oracle``: the task parameters appended)."""
        raise NotImplementedError

    @property
    def action_size(self) -> int:
        """The policy's output size."""
        raise NotImplementedError

    def env(self, num_tasks: int, episodes_per_task: int, oracle: bool = False,
            generator: torch.Generator | None = None) -> TaskEnv:
        """The simulator for ``num_tasks`` × ``episodes_per_task`` episodes; ``generator`` (reset
        noise) where the family uses one."""
        raise NotImplementedError

    def make_env(self, num_tasks: int, episodes_per_task: int, oracle: bool = False,
                 generator: torch.Generator | None = None, normalize_actions: bool | None = None) -> EnvBase:
        """``env``, acting in ``[-1, 1]`` per coordinate with action normalisation (``normalize_actions``,
        by default ``config.normalize_actions``): torchrl's ``ActionScaling`` maps that affinely onto
        the env's action bounds, which the env then clips to: rllab's ``normalize`` wrapper, through
        which the MAML code (Finn et al., 2017) trains every task family. It changes only 2D
        navigation (bounds ±0.1); the MuJoCo actuators already range over ``[-1, 1]``.

        Raises:
            ValueError: if ``num_tasks`` or ``episodes_per_task`` is below 1.
        """
        env = self.env(num_tasks, episodes_per_task, oracle, generator)
        normalize_actions = self.config.normalize_actions if normalize_actions is None else normalize_actions
        return TransformedEnv(env, ActionScaling()) if normalize_actions else env

    def support_tasks(self, tasks: torch.Tensor) -> torch.Tensor:
        """The tasks whose episodes adapt the policy to ``tasks`` (its support episodes), one per
        task: by default the tasks themselves (``tasks``, the same object). A family on recorded
        data returns the data before each task (walk-forward), so that what a policy adapted on and
        what it is scored on never overlap."""
        return tasks

    def support_note(self) -> str:
        """A label for results whose support episodes saw the scored data (``"in-sample"``); empty
        when they did not (the default)."""
        return ""

    def task_conditions(self, tasks: torch.Tensor) -> list[str]:
        """A readable bucket per task (``tasks`` ``[num_tasks, *task_shape]``), to show which part
        of a policy acts under which conditions (e.g. a mixture's experts); one bucket by default."""
        return ["all"] * tasks.shape[0]

    def task_groups(self, tasks: torch.Tensor) -> list[str] | None:
        """A name per task by which evaluation also reports (trading: the asset), or None (the default)."""
        return None

    def task_blocks(self, tasks: torch.Tensor) -> torch.Tensor | None:
        """``[task]`` integer blocks of tasks whose results are not independent (trading: test windows
        of several assets over the same dates), or None (the default: every task independent).
        Evaluation's 95% intervals then resample blocks, not tasks (``report.ci95``)."""
        return None

    def episode_statistics(self, tasks: torch.Tensor, episodes: TensorDictBase) -> dict[str, torch.Tensor]:
        """Statistics of every episode beyond its return, ``{name: [task, episode]}`` (``episodes``
        ``[task, episode, time]`` with ``reward``, ``mask`` and ``action``, on ``tasks``); none by default."""
        return {}

    def references(self, tasks: torch.Tensor) -> dict[str, TensorDictBase]:
        """Episodes of fixed reference strategies on ``tasks``, ``{name: [task, time]}`` with ``reward``
        and ``action`` (e.g. buy-and-hold), scored beside the policies in evaluation; none by default."""
        return {}

    def reports(self, evaluation: Any, out_dir: Path) -> tuple[str, list[Path]]:
        """What only this family can report of an evaluation (``evaluation``: the run layer's
        ``Evaluation``: its tasks, table, paths and deterministic runs): text for the terminal
        (empty for none) and the files written to ``out_dir`` (pictures, tables). None by default."""
        return "", []


def build_family(config: EnvConfig, threads: int = 0) -> TaskFamily:
    """The family named ``config.name``, built once from its settings.

    Raises:
        ValueError: for an unknown name (lists the known ones).
    """
    return ENVS[config.name].cls(config, threads)
