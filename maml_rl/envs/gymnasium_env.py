"""Any gymnasium env with the MetaEnv protocol as a task family (``env=gymnasium env.id=...``).

The protocol is the one meta-RL envs in the wild share (pytorch-maml-rl's envs and the codebases
after it; Meta-World's ``set_task``): the env's ``sample_tasks(num_tasks)`` returns a list of
tasks (any picklable objects; with a ``split`` argument it is passed ``"train"`` or ``"test"``)
and ``set_task(task)`` makes the env that task's MDP, from its next reset. Optionally,
``task_vector(task)`` returns the task's parameters as a 1-d array, which the oracle baseline
appends to the observation.

One env instance per ``[task, episode]`` slot, stepped together through gymnasium's
``SyncVectorEnv`` (or ``AsyncVectorEnv``, one process per slot, with ``env.vector=async``); the
family keeps every task it sampled and the platform handles them by index.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import gymnasium
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Composite, Unbounded

from .base import TaskEnv, TaskFamily
from .settings import ENVS, GymnasiumConfig

PROTOCOL = ("sample_tasks", "set_task")


def env_creator(env_id: str, kwargs: dict[str, Any]):
    """A function that builds one env: ``module:Class`` (an entry point, as ``gymnasium.register``
    takes) or a registered gymnasium id, with ``kwargs``.

    Raises:
        ValueError: one line naming ``env_id`` and why it cannot be built (no such module, class or id).
    """
    import gymnasium

    if ":" in env_id:
        module, _, attribute = env_id.partition(":")
        try:
            creator = gymnasium.envs.registration.load_env_creator(env_id)
        except ModuleNotFoundError as err:
            raise ValueError(f"env.id={env_id}: no module named {err.name!r}") from None
        except AttributeError:
            raise ValueError(f"env.id={env_id}: module {module!r} has no {attribute!r}") from None
        return lambda: creator(**kwargs)
    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as err:
        raise ValueError(f"env.id={env_id} is not a registered gymnasium id ({err}); give one, or an entry point "
                         "module:Class") from None
    return lambda: gymnasium.make(env_id, **kwargs)


class TaskSlot(gymnasium.Wrapper):
    """One ``[task, episode]`` slot of the adapter: its env's task is set by assigning ``task``, which
    ``VectorEnv.set_attr`` does in whichever process the env lives (the same call for sync and
    async vector envs)."""

    @classmethod
    def of(cls, make: Any) -> TaskSlot:
        """The slot around a new env from ``make``."""
        return cls(make())

    @property
    def task(self) -> Any:
        return getattr(self, "_task", None)

    @task.setter
    def task(self, value: Any) -> None:
        self._task = value
        self.env.unwrapped.set_task(value)


def box_size(space: Any, what: str, label: str) -> int:
    """The size of a flat ``Box`` space.

    Raises:
        ValueError: for any other space.
    """
    import gymnasium

    if not isinstance(space, gymnasium.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"{label}: the {what} space must be a 1-d Box, got {space}")
    return space.shape[0]


@ENVS.register("gymnasium")
class Gymnasium(TaskFamily):
    """The task family of a MetaEnv-protocol gymnasium env. Tasks are the env's own objects, kept
    in ``tasks``; ``sample_tasks`` returns their indices ``[num_tasks]`` (float64), drawn with the
    env's random generator seeded from the platform's stream (so a seed gives the same tasks).

    Raises:
        ValueError: see ``GymnasiumConfig.check``.
    """

    info_keys: tuple[str, ...] = ()  # per-step ``info`` entries kept with the episodes (Meta-World: success)

    def __init__(self, config: GymnasiumConfig, threads: int = 0, make: Any = None, label: str | None = None):
        """``make`` builds one env (default: from ``config.id`` and ``config.kwargs``); ``label`` names
        it in errors (default ``env.id=<id>``)."""
        super().__init__(config, threads)
        self.label = label or f"env.id={config.id}"
        self.make = make or env_creator(config.id, dict(config.kwargs))
        self.probe = self.make()  # samples the tasks and tells the sizes
        missing = [m for m in PROTOCOL if not callable(getattr(self.probe.unwrapped, m, None))]
        if missing:
            raise ValueError(f"{self.label}: the env has no {' or '.join(missing)}; a task family needs "
                             "sample_tasks(num_tasks) and set_task(task)")
        self.obs_size = box_size(self.probe.observation_space, "observation", self.label)
        self._action_size = box_size(self.probe.action_space, "action", self.label)
        bounds = self.probe.action_space
        if config.normalize_actions and not (np.isfinite(bounds.low).all() and np.isfinite(bounds.high).all()):
            raise ValueError(f"{self.label}: the action space is unbounded; set env.normalize_actions=false")
        self.tasks: list[Any] = []
        declared = callable(getattr(self.probe.unwrapped, "task_vector", None))  # what the oracle can see
        self.task_size = np.asarray(self.probe.unwrapped.task_vector(next(iter(
            self.probe.unwrapped.sample_tasks(1))))).size if declared else None

    @property
    def action_size(self) -> int:
        return self._action_size

    def sample_tasks(self, num_tasks: int, generator: torch.Generator, split: str = "train") -> torch.Tensor:
        """``num_tasks`` tasks of the env (its ``split`` where it takes one), kept; their indices ``[num_tasks]``."""
        self.probe.reset(seed=int(torch.randint(2**31 - 1, (), generator=generator)))  # the env's own RNG, seeded
        sample = self.probe.unwrapped.sample_tasks
        split = "train" if split == "validation" else split  # the MetaEnv protocol knows train and test
        drawn = sample(num_tasks, split=split) if "split" in inspect.signature(sample).parameters else sample(num_tasks)
        first = len(self.tasks)
        self.tasks.extend(list(drawn)[:num_tasks])
        return torch.arange(first, first + num_tasks, dtype=torch.float64)

    def task_vector(self, index: float) -> np.ndarray:
        """The parameters of task ``index`` as the env declares them (``task_vector``), 1-d float."""
        return np.asarray(self.probe.unwrapped.task_vector(self.tasks[int(index)]), dtype=np.float64).reshape(-1)

    def observation_size(self, oracle: bool = False) -> int:
        """The env's observation, and with ``oracle`` the task's parameters.

        Raises:
            ValueError: ``oracle`` for an env that does not declare ``task_vector(task)``.
        """
        if not oracle:
            return self.obs_size
        if self.task_size is None:  # a setting the env cannot serve: the app's one-line refusal
            raise ValueError(f"baseline=oracle needs {self.label} to declare its tasks' parameters: a "
                             "method task_vector(task) returning a 1-d array")
        return self.obs_size + self.task_size

    def env(self, num_tasks, episodes_per_task, oracle=False, generator=None) -> GymnasiumTaskEnv:
        """The simulator (see ``GymnasiumTaskEnv``).

        Raises:
            ValueError: ``oracle`` for an env that does not declare ``task_vector(task)``.
        """
        return GymnasiumTaskEnv(self, num_tasks, episodes_per_task, oracle, generator)


class FamilyTasksEnv(TaskEnv):
    """A simulator of a ``Gymnasium`` family (the adapter's, Meta-World's batch): tasks are indices of
    the family's kept tasks; observations are float32 ``[task, episode, obs]``, with ``oracle`` the
    tasks' ``task_vector`` appended; the family's ``info_keys`` are kept with the episodes.

    Raises:
        ValueError: ``oracle`` for an env that does not declare ``task_vector(task)``, before any
            env is built; batch sizes below 1.
    """

    task_shape = ()

    def __init__(self, family: Gymnasium, num_tasks: int, episodes_per_task: int, oracle: bool = False):
        super().__init__(num_tasks, episodes_per_task, oracle)
        obs_size = family.observation_size(oracle)  # refuses an oracle the env cannot feed
        self.family, self.info_keys = family, family.info_keys
        self.oracle_part = torch.zeros(num_tasks, 0)
        self.observation_spec = Composite(
            observation=Unbounded(shape=(*self.batch_size, obs_size), dtype=torch.float32), shape=self.batch_size)

    def set_tasks(self, tasks: torch.Tensor) -> None:
        """Set the tasks, ``[num_tasks]`` indices of the family's tasks (and the oracle's view of them).

        Raises:
            ValueError: if the shape is not ``[num_tasks]``.
        """
        super().set_tasks(tasks)
        if self.oracle:
            self.oracle_part = torch.as_tensor(np.stack([self.family.task_vector(t) for t in tasks.tolist()]),
                                               dtype=torch.float32)

    def _observation(self, obs: np.ndarray) -> torch.Tensor:
        """``obs`` ``[task · episode, obs]`` as float32 ``[task, episode, obs]``, the oracle part appended."""
        obs = torch.as_tensor(np.asarray(obs, dtype=np.float32)).reshape(*self.batch_size, -1)
        if self.oracle:
            obs = torch.cat([obs, self.oracle_part[:, None].expand(*self.batch_size, -1)], dim=-1)
        return obs


class GymnasiumTaskEnv(FamilyTasksEnv):
    """``num_tasks × episodes_per_task`` instances of the family's env in one vector env (``TaskSlot`` each;
    sync, or async with ``env.vector=async``):
    observation ``[task, episode, obs]`` (float32; with ``oracle`` the task's ``task_vector``
    appended), action ``[task, episode, act]`` clipped to the env's bounds, reward ``[task,
    episode, 1]``, done when the env terminates or truncates, and each of the family's ``info_keys``
    ``[task, episode, 1]`` (float; 0 where a step's info lacks it). Each reset seeds every instance from
    ``generator``. After an episode ends the vector env resets that instance on the next step
    (gymnasium's next-step autoreset); the sampler masks those steps.
    """

    def __init__(self, family: Gymnasium, num_tasks: int, episodes_per_task: int, oracle: bool = False,
                 generator: torch.Generator | None = None):
        from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv

        super().__init__(family, num_tasks, episodes_per_task, oracle)  # refuses a bad oracle before any env is built
        self.generator = generator if generator is not None else torch.Generator()
        vector = AsyncVectorEnv if family.config.vector == "async" else SyncVectorEnv
        self.vector = vector([functools.partial(TaskSlot.of, family.make)] * (num_tasks * episodes_per_task))
        shape, space = self.batch_size, family.probe.action_space
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)
        self.action_spec = Bounded(torch.as_tensor(self.low, dtype=torch.float32).expand(*shape, -1),
                                   torch.as_tensor(self.high, dtype=torch.float32).expand(*shape, -1),
                                   shape=(*shape, family.action_size), dtype=torch.float32)
        self.reward_spec = Unbounded(shape=(*shape, 1), dtype=torch.float32)

    def set_tasks(self, tasks: torch.Tensor) -> None:
        """Set task ``tasks[i]`` (an index of the family's tasks, ``[num_tasks]``) in every episode of task i.

        Raises:
            ValueError: if the shape is not ``[num_tasks]``.
        """
        super().set_tasks(tasks)
        episodes = self.batch_size[1]
        self.vector.set_attr("task", [self.family.tasks[int(tasks[i // episodes])] for i in range(self.vector.num_envs)])

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        seeds = torch.randint(2**31 - 1, (self.vector.num_envs,), generator=self.generator).tolist()
        obs, _ = self.vector.reset(seed=seeds)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict({"observation": self._observation(obs), "done": done, "terminated": done.clone()},
                          batch_size=self.batch_size)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = np.clip(tensordict["action"].detach().reshape(self.vector.num_envs, -1).double().numpy(),
                         self.low, self.high)
        obs, reward, terminated, truncated, info = self.vector.step(action.astype(self.vector.single_action_space.dtype))
        shape = (*self.batch_size, 1)
        done = torch.as_tensor(terminated | truncated).reshape(shape)
        kept = {key: torch.as_tensor(np.where(info.get(f"_{key}", False), info.get(key, 0.0), 0.0),
                                     dtype=torch.float32).reshape(shape) for key in self.info_keys}
        return TensorDict({"observation": self._observation(obs),
                           "reward": torch.as_tensor(np.asarray(reward, dtype=np.float32)).reshape(shape),
                           "done": done, "terminated": torch.as_tensor(terminated).reshape(shape), **kept},
                          batch_size=self.batch_size)

    def _set_seed(self, seed: int | None) -> None:
        self.generator.manual_seed(seed if seed is not None else torch.seed())
