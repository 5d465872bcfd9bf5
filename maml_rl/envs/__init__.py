"""Task distributions, each a batched torchrl env with batch size [task, episode]."""

from __future__ import annotations

import torch

from .locomotion import AntDirEnv, AntVelEnv, HalfCheetahDirEnv, HalfCheetahVelEnv, LocomotionEnv
from .navigation import Navigation2DEnv

ENVS = {"navigation": Navigation2DEnv, "ant": AntVelEnv, "ant_dir": AntDirEnv,
        "halfcheetah_vel": HalfCheetahVelEnv, "halfcheetah_dir": HalfCheetahDirEnv}


def make_env(env_cfg, num_tasks: int, episodes_per_task: int, oracle: bool = False, threads: int = 0,
             generator: torch.Generator | None = None):
    """Build the env named ``env_cfg.name`` for a meta-batch; ``oracle`` appends the task parameters.

    ``threads`` (0 = every core) and ``generator`` (reset noise) apply to the MuJoCo families;
    2D navigation is deterministic and single-threaded.

    Raises:
        ValueError: for an unknown env name (lists the known ones).
    """
    if env_cfg.name not in ENVS:
        raise ValueError(f"env.name={env_cfg.name!r} is not known; available: {sorted(ENVS)}")
    cls = ENVS[env_cfg.name]
    if issubclass(cls, LocomotionEnv):
        return cls(num_tasks, episodes_per_task, oracle=oracle, threads=threads, generator=generator)
    return cls(num_tasks, episodes_per_task, oracle=oracle)
