"""MuJoCo locomotion task families (Finn et al., ICML 2017, Section 5.3), every episode stepped at once.

Physics, observations, reset noise and termination are those of gymnasium's ``Ant-v5``
(``include_cfrc_ext_in_observation=False``) and ``HalfCheetah-v5``, loaded from the model
files installed with gymnasium. The task rewards are the MAML benchmark's (the MAML code's
``ant_env_rand*.py`` / ``half_cheetah_env_rand*.py``, as ported by pytorch-maml-rl).

All ``[task, episode]`` simulations advance together through ``mujoco.rollout`` (one
``MjData`` per thread, a persistent thread pool); observations, rewards and terminations are
computed from the returned states in bulk.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import gymnasium
import mujoco
import numpy as np
import torch
from mujoco import rollout as mj_rollout
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Composite, Unbounded

from .base import TaskEnv, TaskFamily
from .settings import ENVS

ASSETS = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets"
STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS  # [time, qpos, qvel, act, ...]
log = logging.getLogger(__name__)


@contextmanager
def compiler_warnings_to_log(what: str) -> Iterator[None]:
    """Send MuJoCo's warnings to this module's debug log while compiling ``what``.

    Gymnasium's half_cheetah.xml uses the deprecated ``settotalmass``; MuJoCo would print that
    and write it to a ``MUJOCO_LOG.TXT`` in the launch dir. The previous handler is restored
    afterwards, so simulation warnings stay MuJoCo's.
    """
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: log.debug("MuJoCo, compiling %s: %s", what, message))
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


@functools.cache
def load_model(model_file: str) -> mujoco.MjModel:
    """Compile one of gymnasium's model files (``ASSETS / model_file``), once per process (the
    simulators only read it)."""
    with compiler_warnings_to_log(model_file):
        return mujoco.MjModel.from_xml_path(str(ASSETS / model_file))


def available_threads() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LocomotionEnv(TaskEnv):
    """A batch of ``num_tasks × episodes_per_task`` MuJoCo robots, one task parameter per task.

    Subclasses fix the robot (model file, observation, termination) and the task family
    (``sample_tasks`` and ``task_reward``). Each step clips the action to the actuators'
    control range, advances every simulation ``frame_skip`` physics steps with
    ``mujoco.rollout``, and returns

    - observation ``[task, episode, obs_dim]`` (``+1`` with ``oracle``, the task parameter),
    - reward ``[task, episode, 1]``: ``task_reward(v_x) − ctrl_cost_weight·Σa² + survive_bonus``,
      with ``v_x`` the forward velocity over the step (m/s) and ``a`` the clipped action,
    - velocity ``[task, episode, 1]``: v_x, the torso's forward displacement over the step / dt,
    - done/terminated ``[task, episode, 1]`` (the ant's healthy check; never for the cheetah).

    Terminated simulations are frozen until the next reset (no physics is spent on them; the
    sampler masks their steps); non-finite observations are replaced by zeros so that masked
    padding stays finite.

    Args:
        num_tasks: tasks in the meta-batch (≥ 1).
        episodes_per_task: parallel episodes per task (≥ 1).
        oracle: append the task parameter to the observation (the oracle baseline).
        threads: physics threads; 0 = every available core.
        generator: source of the reset noise (a fresh unseeded one if None).
        dtype: dtype of observations and rewards (the physics runs in float64).

    Raises:
        ValueError: if ``num_tasks``/``episodes_per_task`` < 1 or ``threads`` < 0.
    """

    model_file: ClassVar[str]
    frame_skip: ClassVar[int] = 5
    reset_noise_scale: ClassVar[float] = 0.1
    obs_qpos_start: ClassVar[int]  # v5 excludes the x (and y) position from the observation
    ctrl_cost_weight: ClassVar[float]
    survive_bonus: ClassVar[float] = 0.0

    def __init__(self, num_tasks: int, episodes_per_task: int, oracle: bool = False, threads: int = 0,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32):
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = every core), got {threads}")
        super().__init__(num_tasks, episodes_per_task, oracle)
        self.model = load_model(self.model_file)
        self.nthread = min(threads or available_threads(), num_tasks * episodes_per_task)
        self.models = [self.model] * (num_tasks * episodes_per_task)  # rollout takes one model per simulation
        self.datas = [mujoco.MjData(self.model) for _ in range(max(self.nthread, 1))]
        self.pool = mj_rollout.Rollout(nthread=self.nthread if self.nthread > 1 else 0)
        self.dtype_ = dtype
        self.generator = generator if generator is not None else torch.Generator()
        self.dt = self.model.opt.timestep * self.frame_skip
        self.nq, self.nv = self.model.nq, self.model.nv
        num = num_tasks * episodes_per_task
        self.physics = np.zeros((num, mujoco.mj_stateSize(self.model, STATE_SPEC)))
        self.substeps = np.zeros((num, self.frame_skip, self.physics.shape[1]))
        self.controls = np.zeros((num, self.frame_skip, self.model.nu))
        self.running = np.ones(num, dtype=bool)
        shape = self.batch_size
        obs_dim = self.nq - self.obs_qpos_start + self.nv + int(oracle)
        low, high = (torch.as_tensor(self.model.actuator_ctrlrange[:, i], dtype=dtype) for i in (0, 1))
        self.observation_spec = Composite(observation=Unbounded(shape=(*shape, obs_dim), dtype=dtype), shape=shape)
        self.action_spec = Bounded(low.expand(*shape, -1), high.expand(*shape, -1), shape=(*shape, self.model.nu),
                                   dtype=dtype)
        self.reward_spec = Unbounded(shape=(*shape, 1), dtype=dtype)

    @classmethod
    def sizes(cls, oracle: bool = False) -> tuple[int, int]:
        """Observation and action sizes of this robot, read from its model file."""
        model = load_model(cls.model_file)
        return model.nq - cls.obs_qpos_start + model.nv + int(oracle), model.nu

    # ------------------------------------------------------------------ the task family
    def task_reward(self, velocity: np.ndarray, task: np.ndarray) -> np.ndarray:
        """Per-step task reward from the forward velocity ``[N]`` (m/s) and task parameter ``[N]``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the robot
    def healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Whether each simulation may continue, ``[N]`` bool."""
        return np.ones(qpos.shape[0], dtype=bool)

    # ------------------------------------------------------------------ EnvBase
    def reset_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Start every simulation from ``qpos [N, nq]``, ``qvel [N, nv]`` (float64), time 0."""
        self.physics[:] = 0.0
        self.physics[:, 1:1 + self.nq], self.physics[:, 1 + self.nq:1 + self.nq + self.nv] = qpos, qvel
        self.running = np.ones(qpos.shape[0], dtype=bool)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        num, noise = self.physics.shape[0], self.reset_noise_scale
        u = torch.rand(num, self.nq, generator=self.generator, dtype=torch.float64).numpy()
        n = torch.randn(num, self.nv, generator=self.generator, dtype=torch.float64).numpy()
        self.reset_state(self.model.qpos0 + noise * (2 * u - 1), noise * n)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict({"observation": self._observation(), "done": done, "terminated": done.clone()},
                          batch_size=self.batch_size)

    def applied_action(self, action: torch.Tensor) -> np.ndarray:
        """What the actuators receive: ``action`` ``[..., nu]`` clipped to their control range, float64 ``[N, nu]``."""
        low, high = self.model.actuator_ctrlrange.T
        return np.clip(action.detach().reshape(-1, self.model.nu).double().numpy(), low, high)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = self.applied_action(tensordict["action"])
        run = np.flatnonzero(self.running)  # terminated simulations stay frozen: no physics is spent on them
        n = run.size
        self.controls[:n] = action[run, None, :]
        x_before = self.physics[:, 1].copy()  # qpos[0]: the torso's forward position
        if n:
            self.pool.rollout(self.models[:n], self.datas, self.physics[run], self.controls[:n],
                              nstep=self.frame_skip, state=self.substeps[:n], skip_checks=True)
            self.physics[run] = self.substeps[:n, -1]
        velocity = (self.physics[:, 1] - x_before) / self.dt  # 0 for frozen simulations
        task = np.repeat(self.tasks.numpy(), self.batch_size[1])
        reward = self.task_reward(velocity, task) - self.ctrl_cost_weight * np.square(action).sum(-1) \
            + self.survive_bonus
        qpos, qvel = self._qpos_qvel()
        self.running &= self.healthy(qpos, qvel)
        shape = (*self.batch_size, 1)
        terminated = torch.from_numpy(~self.running).reshape(shape)
        return TensorDict({"observation": self._observation(),
                           "reward": torch.from_numpy(reward).to(self.dtype_).reshape(shape),
                           "velocity": torch.from_numpy(velocity).reshape(shape),
                           "done": terminated, "terminated": terminated.clone()}, batch_size=self.batch_size)

    def _qpos_qvel(self) -> tuple[np.ndarray, np.ndarray]:
        return self.physics[:, 1:1 + self.nq], self.physics[:, 1 + self.nq:1 + self.nq + self.nv]

    def _observation(self) -> torch.Tensor:
        qpos, qvel = self._qpos_qvel()
        obs = np.nan_to_num(np.concatenate([qpos[:, self.obs_qpos_start:], qvel], axis=-1),
                            nan=0.0, posinf=0.0, neginf=0.0)
        obs = torch.from_numpy(obs).to(self.dtype_).reshape(*self.batch_size, -1)
        if self.oracle:
            task = self.tasks.to(self.dtype_)[:, None, None].expand(*self.batch_size, 1)
            obs = torch.cat([obs, task], dim=-1)
        return obs

    def _set_seed(self, seed: int | None) -> None:
        self.generator.manual_seed(seed if seed is not None else torch.seed())


class AntEnv(LocomotionEnv):
    """The ant of ``Ant-v5``: 27-dim observation (qpos[2:], qvel), 8 actuators in [-1, 1].

    Terminates when the state is not finite or the torso height qpos[2] leaves [0.2, 1.0]
    (v5's ``healthy_z_range``). The forward velocity is the torso's displacement (qpos[0])
    over the step; gymnasium's own ``x_velocity`` reads ``xpos``, which the RK4 integrator
    leaves at its last intermediate stage (a small per-step difference that integrates to
    the same distance). Costs of the MAML code's ant: control cost 0.5·1e-2·Σa², survive
    reward 0.05.
    Its contact cost is left out: with MuJoCo ≥ 2.0 the ``cfrc_ext`` it uses were zero in
    the reference ports, and ``mujoco.rollout`` returns no contact forces.
    """

    model_file = "ant.xml"
    obs_qpos_start = 2
    ctrl_cost_weight = 0.5 * 1e-2
    survive_bonus = 0.05
    healthy_z = (0.2, 1.0)

    def healthy(self, qpos, qvel):
        finite = np.isfinite(qpos).all(-1) & np.isfinite(qvel).all(-1)
        return finite & (qpos[:, 2] >= self.healthy_z[0]) & (qpos[:, 2] <= self.healthy_z[1])


class HalfCheetahEnv(LocomotionEnv):
    """The cheetah of ``HalfCheetah-v5``: 17-dim observation (qpos[1:], qvel), 6 actuators in [-1, 1].

    Never terminates. The forward position is qpos[0] (v5 reads it after the step).
    Control cost of the MAML code's half-cheetah: 0.5·1e-1·Σa².
    """

    model_file = "half_cheetah.xml"
    obs_qpos_start = 1
    ctrl_cost_weight = 0.5 * 1e-1


class VelocityTasks:
    """Goal velocity v_goal ~ U[``velocity_low``, ``velocity_high``]; task reward −|v_x − v_goal| + ``velocity_bonus``."""

    velocity_low: ClassVar[float] = 0.0
    velocity_high: ClassVar[float]
    velocity_bonus: ClassVar[float] = 0.0

    @classmethod
    def sample_tasks(cls, num_tasks: int, generator: torch.Generator, split: str = "train") -> torch.Tensor:
        u = torch.rand(num_tasks, generator=generator, dtype=torch.float64)
        return cls.velocity_low + (cls.velocity_high - cls.velocity_low) * u

    def task_reward(self, velocity, task):
        return -np.abs(velocity - task) + self.velocity_bonus

    @classmethod
    def task_conditions(cls, tasks: torch.Tensor) -> list[str]:
        """The goal velocity's quarter of its range (``"v 0.00-0.75"`` for the ant's first)."""
        width = (cls.velocity_high - cls.velocity_low) / 4
        bins = ((tasks - cls.velocity_low) / width).floor().clamp(0, 3).long().tolist()
        return [f"v {cls.velocity_low + b * width:.2f}-{cls.velocity_low + (b + 1) * width:.2f}" for b in bins]


class DirectionTasks:
    """Direction d ∈ {−1, +1} with probability 1/2 each; task reward d · v_x."""

    @classmethod
    def sample_tasks(cls, num_tasks: int, generator: torch.Generator, split: str = "train") -> torch.Tensor:
        return torch.randint(0, 2, (num_tasks,), generator=generator).to(torch.float64) * 2 - 1

    def task_reward(self, velocity, task):
        return task * velocity

    @classmethod
    def task_conditions(cls, tasks: torch.Tensor) -> list[str]:
        """``"forward"`` or ``"backward"``."""
        return ["forward" if d > 0 else "backward" for d in tasks.tolist()]


class AntVelEnv(VelocityTasks, AntEnv):
    """``ant``: goal velocity ~ U[0, 3] (Finn et al., 2017, Section 5.3); the MAML code adds a
    bonus of 1 per step to the velocity term so that the ant is not rewarded for ending the episode."""

    velocity_high = 3.0
    velocity_bonus = 1.0


class AntDirEnv(DirectionTasks, AntEnv):
    """``ant_dir``: run forward (+1) or backward (−1) (Finn et al., 2017, Section 5.3)."""


class HalfCheetahVelEnv(VelocityTasks, HalfCheetahEnv):
    """``halfcheetah_vel``: goal velocity ~ U[0, 2] (Finn et al., 2017, Section 5.3)."""

    velocity_high = 2.0


class HalfCheetahDirEnv(DirectionTasks, HalfCheetahEnv):
    """``halfcheetah_dir``: run forward (+1) or backward (−1) (Finn et al., 2017, Section 5.3)."""


class LocomotionFamily(TaskFamily):
    """A locomotion task family: its tasks (one scalar per task) and sizes come from its simulator
    class ``env_class`` (the robot and the task kind), which it builds on ``threads`` threads."""

    env_class: ClassVar[type[LocomotionEnv]]

    def sample_tasks(self, num_tasks: int, generator: torch.Generator, split: str = "train") -> torch.Tensor:
        """``[num_tasks]`` task parameters of ``env_class`` (one distribution for every split)."""
        return self.env_class.sample_tasks(num_tasks, generator, split)

    def task_conditions(self, tasks: torch.Tensor) -> list[str]:
        return self.env_class.task_conditions(tasks)

    def observation_size(self, oracle: bool = False) -> int:
        return self.env_class.sizes(oracle)[0]

    @property
    def action_size(self) -> int:
        return self.env_class.sizes()[1]

    def env(self, num_tasks, episodes_per_task, oracle=False, generator=None) -> LocomotionEnv:
        return self.env_class(num_tasks, episodes_per_task, oracle=oracle, threads=self.threads, generator=generator)


@ENVS.register("ant")
class AntVel(LocomotionFamily):
    env_class = AntVelEnv


@ENVS.register("ant_dir")
class AntDir(LocomotionFamily):
    env_class = AntDirEnv


@ENVS.register("halfcheetah_vel")
class HalfCheetahVel(LocomotionFamily):
    env_class = HalfCheetahVelEnv


@ENVS.register("halfcheetah_dir")
class HalfCheetahDir(LocomotionFamily):
    env_class = HalfCheetahDirEnv
