"""2D point navigation (Finn et al., ICML 2017, Section 5.3), batched over tasks and episodes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Composite, Unbounded

from .base import ENVS, EnvConfig, TaskEnv


@dataclass
class NavigationConfig(EnvConfig):
    """``env=navigation``: horizon 100, 20 tasks × 20 episodes, α = 0.1 (Finn et al., 2017, App. A.2);
    positions are already in [-1, 1], so observations are not normalised."""

    name: str = "navigation"


@ENVS.register("navigation", NavigationConfig)
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
    goal_low, goal_high = -0.5, 0.5
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

    @classmethod
    def sample_tasks(cls, num_tasks: int, generator: torch.Generator, split: str = "train") -> torch.Tensor:
        """Goals ``[num_tasks, 2]`` drawn uniformly from ``[-0.5, 0.5]²``."""
        u = torch.rand(num_tasks, 2, generator=generator, dtype=torch.float64)
        return cls.goal_low + (cls.goal_high - cls.goal_low) * u

    @classmethod
    def task_conditions(cls, tasks: torch.Tensor) -> list[str]:
        """The goal's quadrant: ``"x+ y+"``, ``"x- y+"``, ``"x- y-"`` or ``"x+ y-"``."""
        return [f"x{'+' if x >= 0 else '-'} y{'+' if y >= 0 else '-'}" for x, y in tasks.tolist()]

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
