"""Batched rollouts: every [task, episode] environment stepped at once with per-task parameters."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from tensordict import TensorDict
from torchrl.envs import EnvBase

from .policy import GaussianMLPPolicy, Params


@contextmanager
def cores_for(env: EnvBase):
    """Give the cores to an env that steps on its own thread pool (MuJoCo): torch runs on one
    thread meanwhile, since its idle OpenMP workers spin and slow the physics threads down."""
    threads = torch.get_num_threads()
    if getattr(env, "nthread", 0) > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def rollout(env: EnvBase, policy: GaussianMLPPolicy, params: Params, horizon: int,
            generator: torch.Generator) -> TensorDict:
    """Collect one episode per ``[task, episode]`` slot of ``env`` with θ_i for task i.

    Actions are drawn from π_θi (unclipped; the env clips what it applies). Steps after an
    episode terminates are padding with ``mask = 0``; the last valid step of every episode,
    terminated or cut at ``horizon``, carries ``done = True`` (rllab's convention: the value
    after the horizon is 0).

    Args:
        env: a batched env with batch size ``[task, episode]``.
        policy: the policy whose functional form is evaluated.
        params: θ_i with a leading task dim (detached).
        horizon: maximum steps per episode (≥ 1).
        generator: source of the action noise.

    Returns:
        A TensorDict of batch size ``[task, episode, time]`` with ``observation``
        ``[..., obs_dim]``, ``action`` and ``loc`` (policy mean) ``[..., act_dim]``, ``log_prob``,
        ``reward``, ``mask`` (float) and ``done`` (bool), each ``[task, episode, time]``, and the
        behaviour ``log_std`` broadcast to ``[..., act_dim]``.
    """
    with cores_for(env):
        td = env.reset()
        alive = torch.ones(env.batch_size, dtype=torch.bool)
        steps = []
        for _ in range(horizon):
            obs = td["observation"]
            loc, log_std = policy.per_task(params, obs)
            noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype)
            action = loc + noise * log_std.exp()[:, None, :]
            td["action"] = action
            nxt = env.step(td)["next"]
            steps.append((obs, action, loc, nxt["reward"][..., 0], alive.clone()))
            alive &= ~nxt["done"][..., 0]
            if not alive.any():
                break
            td = nxt
    obs, action, loc, reward, mask = (torch.stack(x, dim=2) for x in zip(*steps))
    pad = horizon - obs.shape[2]
    if pad:
        obs, action, loc = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (obs, action, loc))
        reward, mask = (torch.nn.functional.pad(x, (0, pad)) for x in (reward, mask))
    mask_f = mask.to(obs.dtype)
    # last valid step: valid now and not valid at the next step (or the horizon)
    next_mask = torch.nn.functional.pad(mask[..., 1:], (0, 1), value=False)
    done = mask & ~next_mask
    log_prob = GaussianMLPPolicy.log_prob(loc, log_std, action)
    return TensorDict({"observation": obs, "action": action, "loc": loc, "log_prob": log_prob,
                       "reward": reward * mask_f, "mask": mask_f, "done": done,
                       "log_std": log_std[:, None, None, :].expand(*mask.shape, -1)},
                      batch_size=mask.shape)


def episode_returns(episodes: TensorDict) -> torch.Tensor:
    """Undiscounted return of every episode, ``[task, episode]``."""
    return (episodes["reward"] * episodes["mask"]).sum(-1)
