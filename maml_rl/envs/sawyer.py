"""Meta-World's Sawyer skills stepped in batch: ``reach-v3``, ``push-v3`` and ``pick-place-v3`` of
ML1 (Yu et al., CoRL 2019; v3, McLean et al., 2025), every ``[task, episode]`` world at once.

The physics is Meta-World's own: its XML model from the installed package, its mocap control
(the end effector's mocap target moved by ``action[:3] · action_scale`` and clipped to the mocap
box, the gripper's two actuators driven by ``±action[3]``), ``frame_skip`` physics steps per
policy step. Observations (hand, gripper opening, object position and quaternion, the previous
frame; goal hidden), the v2 rewards and success are computed for the whole batch in numpy.

Every world is one simulation of a ``mujoco.batch.Batch``: its whole integration state
(``mjSTATE_INTEGRATION``: positions, velocities, the constraint solver's warm start, controls,
mocap target) is a row the batch loads into a per-thread ``MjData``, advances by ``frame_skip``
``mj_step`` calls and saves back, on MuJoCo's own thread pool (C, no GIL; bit-identical to one
``MjData`` per world). ``mujoco.rollout`` would step the same physics, but it starts every call
from a zero (or given) warm start and does not return the one it ends with; the official env
carries it from step to step, and Meta-World's Newton solver (tolerance 1e-10, at most 50
iterations) lands elsewhere from a cold start: 7e-5 m apart after 2 steps of reach, 7e-3 after
an episode of push (docs/metaworld.md). With the warm start kept, the batch steps the same numbers
as the official env. The positions the observations and rewards read are those after the step,
as Meta-World's ``mj_forward`` leaves them: a second batch, on a copy of the model with contacts
and constraints disabled, runs the position stage on the new states (the kinematics, without the
collision detection a full position stage would repeat).

Resets are deterministic in Meta-World (the hand is driven to its start for 50 steps, then the
object and goal of the task are placed): the state right after the official env's reset is
recorded once per goal (``ResetRecord``) and copied into every world of that task.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
import torch
from mujoco.batch import Batch
from scipy.spatial.transform import Rotation
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Unbounded

from .gymnasium_env import FamilyTasksEnv
from .locomotion import available_threads
from .settings import BATCHED_SKILLS

INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION  # qpos, qvel, act, warm start, controls, mocap, ...
LONG_TAIL_AT_MARGIN = 0.1  # Meta-World's reward_utils: tolerance() is 0.1 at the margin


def tolerance(x: np.ndarray, low: float, high: float, margin: np.ndarray) -> np.ndarray:
    """Meta-World's ``reward_utils.tolerance(x, bounds=(low, high), margin, sigmoid="long_tail")``
    with a margin per world: 1 inside ``[low, high]``, else ``1 / (1 + (d·s)²)`` with ``d`` the
    distance to the nearer bound over ``margin`` and ``s = √(1/0.1 − 1)`` (0 outside for a zero margin).
    All arrays ``[N]``."""
    inside = (low <= x) & (x <= high)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(x < low, low - x, x - high) / margin
    scale = np.sqrt(1 / LONG_TAIL_AT_MARGIN - 1)
    outside = np.where(margin == 0, 0.0, 1 / ((d * scale) ** 2 + 1))
    return np.where(inside, 1.0, outside)


def hamacher(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Meta-World's ``reward_utils.hamacher_product``: ``ab / (a + b − ab)``, 0 where both are 0; ``[N]``."""
    denominator = a + b - a * b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, a * b / denominator, 0.0)


@dataclass(frozen=True)
class ResetRecord:
    """What the official env holds right after its reset to one task: the full integration state
    (``mjSTATE_INTEGRATION``: positions, velocities, warm start, mocap, controls), the first
    observation ``[39]`` and the quantities the v2 rewards compare against."""

    state: np.ndarray
    observation: np.ndarray
    obj_init_pos: np.ndarray
    target_pos: np.ndarray
    init_tcp: np.ndarray


def record_reset(official: Any, task: Any) -> ResetRecord:
    """Reset Meta-World's env ``official`` (its skill's class, ``metaworld.sawyer_xyz_env.SawyerXYZEnv``)
    to ``task`` and record the state it starts from."""
    official.set_task(task)
    observation, _ = official.reset()
    state = np.empty(mujoco.mj_stateSize(official.model, INTEGRATION))
    mujoco.mj_getState(official.model, official.data, state, INTEGRATION)
    return ResetRecord(state, np.asarray(observation, dtype=np.float64), np.array(official.obj_init_pos, dtype=np.float64),
                       np.array(official._target_pos, dtype=np.float64), np.array(official.init_tcp, dtype=np.float64))


@dataclass
class Frame:
    """One step of the batch, what the rewards read: ``obs`` ``[N, 39]`` (clipped as the official
    env clips it), ``action`` ``[N, 4]`` (float32, as the env received it), ``tcp`` ``[N, 3]`` (the
    fingers' centre), ``left_pad`` / ``right_pad`` ``[N, 3]``, and each world's reset record fields
    stacked: ``obj_init_pos``, ``target_pos``, ``init_tcp`` ``[N, 3]``; ``hand_init_pos`` ``[3]``."""

    obs: np.ndarray
    action: np.ndarray
    tcp: np.ndarray
    left_pad: np.ndarray
    right_pad: np.ndarray
    obj_init_pos: np.ndarray
    target_pos: np.ndarray
    init_tcp: np.ndarray
    hand_init_pos: np.ndarray


def kinematics_model(model: mujoco.MjModel) -> mujoco.MjModel:
    """A copy of ``model`` whose position stage is the kinematics: contacts and constraints
    disabled (they change no position), so no collision detection runs."""
    kinematics = copy.copy(model)
    kinematics.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONTACT | mujoco.mjtDisableBit.mjDSBL_CONSTRAINT)
    return kinematics


def norm(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x, axis=-1)


def reach_reward(f: Frame) -> tuple[np.ndarray, np.ndarray]:
    """``SawyerReachEnvV3.compute_reward`` (v2): 10 · tolerance(|tcp − goal|, (0, 0.05), margin
    |hand start − goal|); success when the fingers' centre is within 0.05 m of the goal."""
    tcp_to_target = norm(f.tcp - f.target_pos)
    in_place = tolerance(tcp_to_target, 0.0, 0.05, norm(f.hand_init_pos - f.target_pos))
    return 10 * in_place, tcp_to_target <= 0.05


def caging_y_xz(f: Frame, obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The left/right (y) and x-z parts of ``SawyerXYZEnv._gripper_caging_reward`` (obj radius
    0.015, pad success 0.05, x-z threshold 0.005), ``[N]`` each."""
    pads = np.stack([f.left_pad[:, 1], f.right_pad[:, 1]], -1)
    pad_to_obj = np.abs(pads - obj[:, 1:2])
    margin = np.abs(np.abs(pads - f.obj_init_pos[:, 1:2]) - 0.05)
    left, right = (tolerance(pad_to_obj[:, i], 0.015, 0.05, margin[:, i]) for i in (0, 1))
    xz = [0, 2]
    xz_margin = norm(f.obj_init_pos[:, xz] - f.init_tcp[:, xz]) - 0.005
    return hamacher(left, right), tolerance(norm(f.tcp[:, xz] - obj[:, xz]), 0.0, 0.005, xz_margin)


def grasped(caging: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The shared ending of Meta-World's caging rewards, high density: (hamacher(caging, gripping) +
    caging) / 2, gripping = the gripper effort clipped to [0, 1] once caging exceeds 0.97."""
    gripping = np.where(caging > 0.97, np.clip(action[:, 3].astype(np.float64), 0.0, 1.0), 0.0)
    return (hamacher(caging, gripping) + caging) / 2


def push_reward(f: Frame) -> tuple[np.ndarray, np.ndarray]:
    """``SawyerPushEnvV3.compute_reward`` (v2): 2 · caging reward, doubled plus 1 + 5 · in-place
    when the fingers hold the object open-handed within 2 cm, 10 once the object is within
    ``TARGET_RADIUS`` 0.05 m of the goal (its success)."""
    obj, tcp_opened = f.obs[:, 4:7], f.obs[:, 3]
    tcp_to_obj, target_to_obj = norm(obj - f.tcp), norm(obj - f.target_pos)
    in_place = tolerance(target_to_obj, 0.0, 0.05, norm(f.obj_init_pos - f.target_pos))
    reward = 2 * grasped(hamacher(*caging_y_xz(f, obj)), f.action)
    reward = np.where((tcp_to_obj < 0.02) & (tcp_opened > 0), 2 * reward + 1.0 + 5.0 * in_place, reward)
    return np.where(target_to_obj < 0.05, 10.0, reward), target_to_obj <= 0.05


def pick_place_reward(f: Frame) -> tuple[np.ndarray, np.ndarray]:
    """``SawyerPickPlaceEnvV3.compute_reward`` (v2, with its own caging reward, x-z margin from the
    start of the fingers' centre): hamacher(grasped, in-place), plus 1 + 5 · in-place once the
    object is lifted 1 cm in an open hand within 2 cm, 10 within 0.05 m of the goal; success
    within 0.07 m. Meta-World's "initial" pad positions (``init_left_pad``, ``init_right_pad``)
    are views of ``data.xpos`` (``get_body_com`` returns the row), so they move with the pads: the
    y margins are measured from the current pads, as the official env computes them."""
    obj, tcp_opened = f.obs[:, 4:7], f.obs[:, 3]
    obj_to_target, tcp_to_obj = norm(obj - f.target_pos), norm(obj - f.tcp)
    in_place = tolerance(obj_to_target, 0.0, 0.05, norm(f.obj_init_pos - f.target_pos))
    right = tolerance(obj[:, 1] - f.right_pad[:, 1], 0.015, 0.05,
                      np.abs(np.abs(obj[:, 1] - f.right_pad[:, 1]) - 0.05))
    left = tolerance(f.left_pad[:, 1] - obj[:, 1], 0.015, 0.05,
                     np.abs(np.abs(obj[:, 1] - f.left_pad[:, 1]) - 0.05))
    xz = [0, 2]
    x_z = tolerance(norm(f.tcp[:, xz] - obj[:, xz]), 0.0, 0.005, norm(f.obj_init_pos[:, xz] - f.init_tcp[:, xz]) - 0.005)
    reward = hamacher(grasped(hamacher(hamacher(left, right), x_z), f.action), in_place)
    lifted = (tcp_to_obj < 0.02) & (tcp_opened > 0) & (obj[:, 2] - 0.01 > f.obj_init_pos[:, 2])
    reward = np.where(lifted, reward + 1.0 + 5.0 * in_place, reward)
    return np.where(obj_to_target < 0.05, 10.0, reward), obj_to_target <= 0.07


REWARDS: dict[str, Callable[[Frame], tuple[np.ndarray, np.ndarray]]] = {
    "reach-v3": reach_reward, "push-v3": push_reward, "pick-place-v3": pick_place_reward}
assert tuple(REWARDS) == BATCHED_SKILLS  # the torch-free settings name them for validation


class SawyerBatchEnv(FamilyTasksEnv):
    """``num_tasks × episodes_per_task`` worlds of one Meta-World skill (``BATCHED_SKILLS``), v2 rewards.

    Tasks are indices of the family's Meta-World tasks (as for the official envs). Each step takes
    ``action`` ``[task, episode, 4]`` (clipped to [-1, 1], then float32 as Meta-World receives it)
    and returns observation ``[task, episode, 39]`` (float32; with ``oracle`` the family's
    ``task_vector`` appended), reward and ``success`` ``[task, episode, 1]`` (float32) and done
    ``[task, episode, 1]`` (True at Meta-World's ``max_path_length`` only: its episodes never
    terminate).

    Args:
        family: the ``MetaWorld`` family (its official env, tasks and ``task_vector``).
        num_tasks, episodes_per_task: the batch (≥ 1 each).
        oracle: append each task's ``task_vector``.
        threads: the threads of MuJoCo's batch, the caller's included (0 = every core).

    Raises:
        ValueError: a skill without a batched implementation, ``threads`` < 0, or batch sizes < 1.
    """

    def __init__(self, family: Any, num_tasks: int, episodes_per_task: int, oracle: bool = False, threads: int = 0):
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = every core), got {threads}")
        super().__init__(family, num_tasks, episodes_per_task, oracle)
        o = family.official_env()
        self.reward = REWARDS.get(family.config.env_name)
        if self.reward is None:
            raise ValueError(f"no batched Meta-World env for {family.config.env_name} ({o.__class__.__name__}); "
                             f"batched: {list(BATCHED_SKILLS)}")
        m = o.model
        num = num_tasks * episodes_per_task
        self.num = num
        self.nthread = min(threads or available_threads(), num)
        self.physics = Batch(m, num, self.nthread)  # each world's integration state: a row of physics.state
        self.positions = Batch(kinematics_model(m), num, self.nthread)
        self.state, self.ctrl, self.mocap = self.physics.state, self.physics.ctrl, self.physics.mocap_pos  # views
        self.substeps, self.action_scale = o.frame_skip, o.action_scale  # not "frame_skip": torchrl would repeat each step
        self.mocap_low, self.mocap_high = o.mocap_low, o.mocap_high
        self.hand_init_pos = np.asarray(o.hand_init_pos, dtype=np.float64)
        self.max_path_length = o.max_path_length
        self.obs_low, self.obs_high = o.sawyer_observation_space.low, o.sawyer_observation_space.high
        body, site = (lambda n: m.body(n).id), (lambda n: m.site(n).id)
        self.bodies = [body(n) for n in ("hand", "rightclaw", "leftclaw", "obj", "leftpad", "rightpad")]
        self.sites = [site("rightEndEffector"), site("leftEndEffector")]
        self.obj_geom = m.geom("objGeom").id
        # every world's position arrays after each step (read-only views the batch refreshes)
        self.xpos, self.site_xpos, self.geom_xmat = (self.positions.bind(f) for f in ("xpos", "site_xpos", "geom_xmat"))
        self.records: list[ResetRecord] = []
        self.references: dict[str, np.ndarray] = {}
        self.prev = np.zeros((num, 18))
        self.steps = 0
        shape = self.batch_size
        self.action_spec = Bounded(-torch.ones(*shape, 4), torch.ones(*shape, 4), shape=(*shape, 4), dtype=torch.float32)
        self.reward_spec = Unbounded(shape=(*shape, 1), dtype=torch.float32)

    def set_tasks(self, tasks: torch.Tensor) -> None:
        """Set task ``tasks[i]`` (an index of the family's tasks, ``[num_tasks]``) in every episode of task i.

        Raises:
            ValueError: if the shape is not ``[num_tasks]``.
        """
        super().set_tasks(tasks)
        episodes = self.batch_size[1]
        per_task = [self.family.reset_record(int(t)) for t in tasks.tolist()]
        self.records = [per_task[i // episodes] for i in range(self.num)]
        self.references = {name: np.stack([getattr(r, name) for r in self.records])
                           for name in ("obj_init_pos", "target_pos", "init_tcp")}  # what the rewards compare with

    # ------------------------------------------------------------------ the physics
    def _run(self) -> None:
        """Advance every world by ``substeps`` physics steps from its integration state, then compute
        the positions at the new states (what Meta-World's ``mj_forward`` after the step gives)."""
        self.physics.step(nstep=self.substeps)
        self.positions.state[:] = self.state
        self.positions.forward(stage=mujoco.mjtStage.mjSTAGE_POS)

    # ------------------------------------------------------------------ observations and rewards
    def _current(self) -> np.ndarray:
        """``SawyerXYZEnv._get_curr_obs_combined_no_goal`` for every world: hand position, gripper
        opening (finger distance / 0.1, clipped to [0, 1]), object position and quaternion (x, y, z, w
        from the object geom's rotation, as Meta-World reads it through scipy), zero padding; ``[N, 18]``.
        MuJoCo's rotation matrices are orthonormal to rounding: scipy's validity check, which
        Meta-World runs, passes and changes nothing (the same quaternions, bit for bit), so it is skipped."""
        hand, right, left, obj = (self.xpos[:, k] for k in self.bodies[:4])
        gripper = np.clip(norm(right - left) / 0.1, 0.0, 1.0)
        rotation = self.geom_xmat[:, self.obj_geom].reshape(-1, 3, 3)
        quat = Rotation.from_matrix(rotation, assume_valid=True).as_quat()
        return np.concatenate([hand, gripper[:, None], obj, quat, np.zeros((self.num, 7))], axis=-1)

    def _frame(self, obs: np.ndarray, action: np.ndarray) -> Frame:
        return Frame(obs, action, self.site_xpos[:, self.sites].mean(1), *(self.xpos[:, k] for k in self.bodies[4:]),
                     hand_init_pos=self.hand_init_pos, **self.references)

    # ------------------------------------------------------------------ EnvBase
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        if not self.records:
            raise RuntimeError("set_tasks before reset: the batch has no tasks")
        self.state[:] = np.stack([r.state for r in self.records])
        obs = np.stack([r.observation for r in self.records])
        self.prev, self.steps = obs[:, :18].copy(), 0
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict({"observation": self._observation(obs), "done": done, "terminated": done.clone()},
                          batch_size=self.batch_size)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = np.clip(tensordict["action"].detach().reshape(self.num, 4).double().numpy(), -1.0, 1.0)
        action = action.astype(np.float32)  # what the official env receives through the adapter
        delta = np.clip(action[:, :3], -1, 1) * self.action_scale  # float32, as Meta-World computes it
        self.mocap[:, 0] = np.clip(self.mocap[:, 0] + delta, self.mocap_low, self.mocap_high)
        self.ctrl[:] = np.stack([action[:, 3], -action[:, 3]], -1)
        self._run()
        self.steps += 1
        current = self._current()
        obs = np.clip(np.concatenate([current, self.prev, np.zeros((self.num, 3))], -1),
                      self.obs_low, self.obs_high)
        self.prev = current
        reward, success = self.reward(self._frame(obs, action))
        shape = (*self.batch_size, 1)
        done = torch.full(shape, self.steps >= self.max_path_length)
        return TensorDict({"observation": self._observation(obs),
                           "reward": torch.as_tensor(reward, dtype=torch.float32).reshape(shape),
                           "success": torch.as_tensor(success, dtype=torch.float32).reshape(shape),
                           "done": done, "terminated": torch.zeros(shape, dtype=torch.bool)},
                          batch_size=self.batch_size)

    def _set_seed(self, seed: int | None) -> None:
        """Resets are deterministic (Meta-World's): no randomness to seed."""
