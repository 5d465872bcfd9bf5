"""Batched rollouts: every [task, episode] environment stepped at once with per-task parameters."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from tensordict import TensorDict
from torchrl.envs import EnvBase

from .advantages import compute_advantages
from .params import Dist, Params

if TYPE_CHECKING:
    from ..policies.base import Policy


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


def _broadcast(dist: Dist, batch: torch.Size) -> Dist:
    """Each distribution parameter broadcast to the batch dims ``batch`` (a view, no copy)."""
    return {k: v.expand(*batch, *v.shape[len(batch):]) for k, v in dist.items()}


def _pad_time(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zeros appended along the time dim (dim 2) of ``[task, episode, time, ...]``."""
    return torch.cat([x, x.new_zeros(x.shape[0], x.shape[1], pad, *x.shape[3:])], dim=2) if pad else x


@torch.no_grad()
def rollout(env: EnvBase, policy: Policy, params: Params, horizon: int, generator: torch.Generator,
            deterministic: bool = False) -> TensorDict:
    """Collect one episode per ``[task, episode]`` slot of ``env`` with θ_i for task i.

    Actions are drawn from π_θi (unclipped; the env clips what it applies), or with
    ``deterministic`` are its mode (the mean action of a backtest). Steps after an
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
        ``[..., obs_dim]``, ``action`` ``[..., act_dim]``, ``dist`` (the behaviour policy's
        distribution parameters at every step, the policy's own keys), ``log_prob``, ``reward``,
        ``mask`` (float) and ``done`` (bool), each ``[task, episode, time]``, and each of the env's
        ``info_keys`` (per-step entries an env reports beside the reward, e.g. Meta-World's
        ``success``; none for most envs), masked as the reward.
    """
    info_keys = tuple(getattr(env, "info_keys", ()))
    with cores_for(env):
        td = env.reset()
        alive = torch.ones(env.batch_size, dtype=torch.bool)
        steps, dists = [], []
        for _ in range(horizon):
            obs = td["observation"]
            dist = policy.distribution(params, obs)
            action = policy.mode(dist) if deterministic else policy.sample(dist, generator)
            td["action"] = action
            nxt = env.step(td)["next"]
            steps.append((obs, action, nxt["reward"][..., 0], alive.clone(), *(nxt[k][..., 0] for k in info_keys)))
            dists.append(_broadcast(dist, obs.shape[:-1]))
            alive &= ~nxt["done"][..., 0]
            if not alive.any():
                break
            td = nxt
    pad = horizon - len(steps)
    obs, action, reward, mask, *infos = (_pad_time(torch.stack(x, dim=2), pad) for x in zip(*steps))
    dist = {k: _pad_time(torch.stack([d[k] for d in dists], dim=2), pad) for k in dists[0]}
    mask_f = mask.to(obs.dtype)
    # last valid step: valid now and not valid at the next step (or the horizon)
    next_mask = torch.nn.functional.pad(mask[..., 1:], (0, 1), value=False)
    done = mask & ~next_mask
    return TensorDict({"observation": obs, "action": action, "dist": TensorDict(dist, batch_size=mask.shape),
                       "log_prob": policy.log_prob(dist, action), "reward": reward * mask_f, "mask": mask_f,
                       "done": done, **{k: v * mask_f for k, v in zip(info_keys, infos)}}, batch_size=mask.shape)


def episode_returns(episodes: TensorDict) -> torch.Tensor:
    """Undiscounted return of every episode, ``[task, episode]``."""
    return (episodes["reward"] * episodes["mask"]).sum(-1)


def valid_steps(episodes: TensorDict, keep_above: float = 0.9) -> TensorDict:
    """The valid steps of each task packed first: ``[task, episode, time]`` → ``[task, R]``.

    R is the largest number of valid steps of any task; a task with fewer is padded with
    ``mask`` 0 rows. Every loss of the inner and outer loop is a masked mean over a task's steps
    (``masked_task_mean``), so it has the same value on either layout, and the packed one spares
    the policy the padding after episodes that ended early (about 65 % of the steps of a first
    ant batch, whose robots fall). The steps keep their order. A batch in which packing would
    drop less than ``1 − keep_above`` of the rows (a navigation batch, a packed one) is returned
    as it is: there the copy costs more than it saves.
    """
    num_tasks = episodes.shape[0]
    flat = episodes.reshape(num_tasks, -1)
    valid = flat["mask"] > 0
    rows = int(valid.sum(1).max())
    if rows > keep_above * valid.shape[1] or rows == valid.shape[1]:
        return episodes
    order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices[:, :rows]  # valid first
    return flat[torch.arange(num_tasks).unsqueeze(1), order]


class Sampler:
    """Support or query episodes of θ_i in every task of a meta-batch, with advantages.

    Args:
        env: the batched task-distribution env, ``[task, episode]``.
        policy: the policy.
        horizon: maximum steps per episode.
        gamma: discount γ of the baseline targets and GAE.
        gae_lambda: GAE's λ.
        generator: the run's random stream (action noise).
    """

    def __init__(self, env: EnvBase, policy: Policy, horizon: int, gamma: float, gae_lambda: float,
                 generator: torch.Generator):
        self.env, self.policy, self.horizon = env, policy, horizon
        self.gamma, self.gae_lambda, self.generator = gamma, gae_lambda, generator

    def set_tasks(self, tasks: torch.Tensor) -> None:
        """The tasks ``[task, ...]`` of the next batches."""
        self.env.set_tasks(tasks)

    def __call__(self, params: Params, deterministic: bool = False) -> TensorDict:
        """Roll out θ_i (detached) in every task and add ``advantage``: ``[task, episode, time]``;
        ``deterministic``: the policy's mode instead of samples."""
        episodes = rollout(self.env, self.policy, {k: v.detach() for k, v in params.items()}, self.horizon,
                           self.generator, deterministic)
        return compute_advantages(episodes, self.gamma, self.gae_lambda)
