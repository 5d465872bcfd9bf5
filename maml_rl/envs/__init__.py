"""Task distributions, each a batched torchrl env with batch size [task, episode]."""

from __future__ import annotations

from .navigation import Navigation2DEnv

ENVS = {"navigation": Navigation2DEnv}


def make_env(env_cfg, num_tasks: int, episodes_per_task: int, oracle: bool = False):
    """Build the env named ``env_cfg.name`` for a meta-batch; ``oracle`` appends the task parameters.

    Raises:
        ValueError: for an unknown env name (lists the known ones).
    """
    if env_cfg.name not in ENVS:
        raise ValueError(f"env.name={env_cfg.name!r} is not known; available: {sorted(ENVS)}")
    return ENVS[env_cfg.name](num_tasks, episodes_per_task, oracle=oracle)
