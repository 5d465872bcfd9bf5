"""2D point navigation (Finn et al., ICML 2017, Section 5.3), batched over tasks and episodes."""

from __future__ import annotations

from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Composite, Unbounded

from ..figures import pyplot
from .base import TaskEnv, TaskFamily
from .settings import ENVS


class Navigation2DEnv(TaskEnv):
    """A point agent in the plane that must reach a task-specific goal.

    Dynamics as in the original MAML code: the state starts at the origin, each action is
    clipped to ``[-max_action, max_action]`` per coordinate and added to the state, the reward
    is the negative L2 distance to the goal after the move, and an episode terminates once
    ``|x - goal_x| < goal_tolerance`` and ``|y - goal_y| < goal_tolerance``. The horizon is
    enforced by the sampler.

    Shapes: the env holds ``num_tasks * episodes_per_task`` points with batch size
    ``[task, episode]``; observations are ``[task, episode, 2]`` (``[..., 4]`` with
    ``oracle=True``, which appends the goal), actions ``[task, episode, 2]``, rewards
    ``[task, episode, 1]``.

    Args:
        num_tasks: tasks in the meta-batch (≥ 1).
        episodes_per_task: parallel episodes per task (≥ 1).
        oracle: append the goal to the observation (the oracle baseline).
        dtype: floating dtype of states and observations.

    Raises:
        ValueError: if ``num_tasks`` or ``episodes_per_task`` is below 1.
    """

    max_action = 0.1
    goal_tolerance = 0.01
    task_shape = (2,)

    def __init__(self, num_tasks: int, episodes_per_task: int, oracle: bool = False,
                 dtype: torch.dtype = torch.float32):
        super().__init__(num_tasks, episodes_per_task, oracle)
        self.dtype_ = dtype
        shape = self.batch_size
        obs_dim = 4 if oracle else 2
        self.observation_spec = Composite(
            observation=Unbounded(shape=(*shape, obs_dim), dtype=dtype), shape=shape)
        self.action_spec = Bounded(-self.max_action, self.max_action, shape=(*shape, 2), dtype=dtype)
        self.reward_spec = Unbounded(shape=(*shape, 1), dtype=dtype)
        self.goals = self.tasks.to(dtype)
        self.state = torch.zeros(*shape, 2, dtype=dtype)

    def set_tasks(self, tasks: torch.Tensor) -> None:
        """Set the goals, ``[num_tasks, 2]``.

        Raises:
            ValueError: if the shape is not ``[num_tasks, 2]``.
        """
        super().set_tasks(tasks)
        self.goals = tasks.to(self.dtype_)

    def _observation(self) -> torch.Tensor:
        if not self.oracle:
            return self.state.clone()
        goal = self.goals[:, None, :].expand_as(self.state)
        return torch.cat([self.state, goal], dim=-1)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        self.state = torch.zeros(*self.batch_size, 2, dtype=self.dtype_)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict({"observation": self._observation(), "done": done, "terminated": done.clone()},
                          batch_size=self.batch_size)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict["action"].to(self.dtype_).clamp(-self.max_action, self.max_action)
        self.state = self.state + action
        delta = self.state - self.goals[:, None, :]
        reward = -torch.linalg.vector_norm(delta, dim=-1, keepdim=True)
        terminated = (delta.abs() < self.goal_tolerance).all(dim=-1, keepdim=True)
        return TensorDict({"observation": self._observation(), "reward": reward, "done": terminated,
                           "terminated": terminated.clone()}, batch_size=self.batch_size)

    def _set_seed(self, seed: int | None) -> None:  # deterministic dynamics; tasks come from the sampler
        return None


@ENVS.register("navigation")
class Navigation(TaskFamily):
    """2D navigation's task family: goals uniform in ``[-0.5, 0.5]²`` (Finn et al., 2017, Section
    5.3), simulated by ``Navigation2DEnv``; its evaluation figure is Figure 4's lower panels."""

    goal_low, goal_high = -0.5, 0.5
    task_shape = (2,)
    action_size = 2

    def sample_tasks(self, num_tasks: int, generator: torch.Generator, split: str = "train") -> torch.Tensor:
        """Goals ``[num_tasks, 2]`` drawn uniformly from ``[-0.5, 0.5]²`` (one distribution for every split)."""
        u = torch.rand(num_tasks, 2, generator=generator, dtype=torch.float64)
        return self.goal_low + (self.goal_high - self.goal_low) * u

    def task_conditions(self, tasks: torch.Tensor) -> list[str]:
        """The goal's quadrant: ``"x+ y+"``, ``"x- y+"``, ``"x- y-"`` or ``"x+ y-"``."""
        return [f"x{'+' if x >= 0 else '-'} y{'+' if y >= 0 else '-'}" for x, y in tasks.tolist()]

    def observation_size(self, oracle: bool = False) -> int:
        """The position, and the goal with ``oracle``."""
        return 4 if oracle else 2

    def env(self, num_tasks, episodes_per_task, oracle=False, generator=None) -> Navigation2DEnv:
        return Navigation2DEnv(num_tasks, episodes_per_task, oracle)

    def reports(self, evaluation, out_dir: Path) -> tuple[str, list[Path]]:
        """``trajectories.png`` (see ``plot_trajectories``) when some method adapted."""
        if not evaluation.paths:
            return "", []
        return "", [plot_trajectories(evaluation.paths, evaluation.tasks, evaluation.num_steps,
                                      out_dir / "trajectories.png")]


def plot_trajectories(paths: dict, tasks: torch.Tensor, steps: int, path: Path, task: int = 0) -> Path:
    """Figure 4's lower panels: one episode of one task before adaptation and after the last step,
    the goal marked; positions in the plane, limits that fit every path. ``paths`` is ``{method:
    [(observations [task, time, obs_dim], mask [task, time]) before, … after]}``; returns ``path``."""
    plt = pyplot()
    methods = list(paths)
    fig, axes = plt.subplots(1, max(len(methods), 1), figsize=(4 * max(len(methods), 1), 4.6), squeeze=False)
    goal = tasks[task, :2].tolist()
    points = [torch.tensor([goal, [0.0, 0.0]])]
    for ax, method in zip(axes[0], methods):
        (pre, pre_mask), (post, post_mask) = paths[method][0], paths[method][-1]
        curves = [((pre, pre_mask), "--", "before adaptation"), ((post, post_mask), "-", f"after {steps} steps")]
        for (obs, mask), style, label in curves:
            xy = obs[task][mask[task].bool()][:, :2].double()  # positions before each step, from the origin
            xy = xy[xy.isfinite().all(-1)]  # a diverged step size leaves no position to draw
            points.append(xy)
            ax.plot(xy[:, 0], xy[:, 1], style, label=label)
        ax.plot(*goal, "r*", markersize=14, label="goal")
        ax.set_title(method)
        ax.set_xlabel("x position")
        ax.set_ylabel("y position")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    corners = torch.cat(points)
    center = (corners.min(0).values + corners.max(0).values) / 2
    half = (corners.max(0).values - corners.min(0).values).max().item() / 2 + 0.05  # a square that holds every path
    for ax in axes[0]:
        ax.set_xlim(center[0].item() - half, center[0].item() + half)
        ax.set_ylim(center[1].item() - half, center[1].item() + half)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(f"2D navigation, task {task}: one episode before and after adaptation")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
