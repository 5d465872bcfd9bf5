"""Task distributions, each a batched torchrl env with batch size [task, episode]."""

from __future__ import annotations

import torch
from torchrl.envs import TransformedEnv
from torchrl.envs.transforms import ActionScaling

from .locomotion import AntDirEnv, AntVelEnv, HalfCheetahDirEnv, HalfCheetahVelEnv, LocomotionEnv
from .navigation import Navigation2DEnv

ENVS = {"navigation": Navigation2DEnv, "ant": AntVelEnv, "ant_dir": AntDirEnv,
        "halfcheetah_vel": HalfCheetahVelEnv, "halfcheetah_dir": HalfCheetahDirEnv}


def make_env(env_cfg, num_tasks: int, episodes_per_task: int, oracle: bool = False, threads: int = 0,
             generator: torch.Generator | None = None, normalize_actions: bool | None = None):
    """Build the env named ``env_cfg.name`` for a meta-batch; ``oracle`` appends the task parameters.

    ``threads`` (0 = every core) and ``generator`` (reset noise) apply to the MuJoCo families;
    2D navigation is deterministic and single-threaded. With action normalisation
    (``normalize_actions``, by default ``env_cfg.normalize_actions``) the policy acts in
    ``[-1, 1]`` per coordinate and torchrl's ``ActionScaling`` maps that affinely onto the env's
    action bounds, which the env then clips to: rllab's ``normalize`` wrapper, through which the
    MAML code (Finn et al., 2017) trains every task family. It changes only 2D navigation (bounds
    ±0.1); the MuJoCo actuators already range over ``[-1, 1]``.

    Raises:
        ValueError: for an unknown env name (lists the known ones).
    """
    if env_cfg.name not in ENVS:
        raise ValueError(f"env.name={env_cfg.name!r} is not known; available: {sorted(ENVS)}")
    cls = ENVS[env_cfg.name]
    if issubclass(cls, LocomotionEnv):
        env = cls(num_tasks, episodes_per_task, oracle=oracle, threads=threads, generator=generator)
    else:
        env = cls(num_tasks, episodes_per_task, oracle=oracle)
    normalize_actions = env_cfg.normalize_actions if normalize_actions is None else normalize_actions
    return TransformedEnv(env, ActionScaling()) if normalize_actions else env
